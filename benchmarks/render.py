"""Render committed benchmark JSON (pytest-benchmark) into benchmarks/results/README.md.

Ratios against the goals first, then the absolute figures with the machine they were
measured on. Every number comes from the JSON files; nothing is typed in by hand.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine(data: dict) -> str:
    m = data["machine_info"]
    cpu = m.get("cpu", {}).get("brand_raw", m.get("processor", "?"))
    gpu = m.get("fedunet_gpu")
    cores = m.get("cpu", {}).get("count", "?")
    return f"{gpu} GPU" if gpu else f"{cpu}, {cores} cores"


def render(paths: list[Path]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Produced by `bash scripts/bench.sh` (pytest-benchmark); rendered by `benchmarks/render.py` from the JSON "
        "files in this folder. Ratios are measured side by side in one run: reference time / our time, so a "
        "speed-up for the slow references and a fraction of the limit for memcpy and the bare loop.",
        "",
    ]
    for path in paths:
        data = json.loads(path.read_text())
        commit = data.get("commit_info", {})
        lines += [
            f"## {path.name}",
            "",
            f"Machine: {machine(data)}; {data['machine_info'].get('python_implementation', '')} "
            f"{data['machine_info'].get('python_version', '')}; torch {data['machine_info'].get('fedunet_torch', '?')}; "
            f"commit {str(commit.get('id', '?'))[:12]}{' (dirty)' if commit.get('dirty') else ''}; "
            f"date {data.get('datetime', '?')}; size `{data.get('bench_size', '?')}`.",
            "",
            "| goal | case | ratio | goal | verdict |",
            "|---|---|---|---|---|",
        ]
        for g in data.get("goals", []):
            ratio = "-" if g["ratio"] is None else f"{g['ratio']:.2f}"
            verdict = "not measured" if g["met"] is None else ("met" if g["met"] else "**missed**")
            bound = f"<= {g['minimum']}" if "points apart" in g["goal"] else f">= {g['minimum']}"
            lines.append(f"| {g['goal']} | {g['case']} | {ratio} | {bound} | {verdict} |")
        lines += ["", "| group | case | implementation | median | throughput |", "|---|---|---|---|---|"]
        for b in sorted(
            data["benchmarks"], key=lambda b: (b["group"] or "", b["extra_info"].get("case", ""), b["stats"]["median"])
        ):
            info, median = b["extra_info"], b["stats"]["median"]
            if "bytes" in info:
                rate = f"{info['bytes'] / median / 1e9:.2f} GB/s"
            elif "samples" in info:
                rate = f"{info['samples'] / median:,.0f} samples/s"
            else:
                rate = ""
            lines.append(f"| {b['group']} | {info.get('case', '')} | {info.get('impl', '')} | {median * 1e3:.2f} ms | {rate} |")
        lines.append("")
    if not any(json.loads(p.read_text())["machine_info"].get("fedunet_gpu") for p in paths):
        lines += [
            "## GPU",
            "",
            "No results from a GPU yet: the GPU goals (engine round >= 5x the reference loop, local "
            "training >= 70% of a bare loop) are not measured. Run `bash scripts/bench.sh` on a CUDA machine to add them.",
            "",
        ]
    profiles = sorted(RESULTS.glob("profile-*.json"))
    if profiles:
        lines += profile_section(profiles[-1])
    analysis = Path(__file__).resolve().parent / "missed_goals.md"
    if analysis.exists():
        lines += ["", analysis.read_text().strip(), ""]
    return "\n".join(lines)


def profile_section(path: Path) -> list[str]:
    """The newest profile (benchmarks/profile_engine.py): one round of each loop, cut into phases."""
    data = json.loads(path.read_text())
    impls, prov = data["implementations"], data["provenance"]
    names = list(impls)
    lines = [
        f"## Where the time goes: {path.name}",
        "",
        f"One federated round of each loop under torch.profiler (case `{data['case']}`, size `{data['size']}`, "
        f"{data['samples_per_round']:,} samples per round; {prov['device']}, {prov['threads']} threads, torch "
        f"{prov['torch']}, commit {prov['commit'][:12]}, {prov['date']}; `{prov['command']}`). Unprofiled round: "
        + ", ".join(f"{n} {impls[n]['round_s']:.3f} s" for n in names)
        + ". Milliseconds of the profiled round, and the share of it:",
        "",
        "| phase | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    totals = {n: sum(impls[n]["phases_ms"].values()) for n in names}
    for phase in impls[names[0]]["phases_ms"]:
        cells = [f"{impls[n]['phases_ms'][phase]:,.0f} ms ({100 * impls[n]['phases_ms'][phase] / totals[n]:.0f}%)" for n in names]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| **round (profiled)** | " + " | ".join(f"**{totals[n]:,.0f} ms**" for n in names) + " |")
    lines.append("")
    return lines


if __name__ == "__main__":
    runs = sorted(p for p in RESULTS.glob("*.json") if not p.name.startswith("profile-"))
    paths = runs if len(sys.argv) == 1 else [Path(p) for p in sys.argv[1:]]
    (RESULTS / "README.md").write_text(render(paths))
