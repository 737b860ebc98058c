"""Render committed benchmark JSON (pytest-benchmark) into benchmarks/results/README.md.

Ratios against the goals first, then the absolute figures with the machine they were
measured on. Every number comes from the JSON files; nothing is typed in by hand.
"""

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def variant_label(r: dict) -> str:
    """A timed step variant's name, with what it could not apply on that device (step_variants.py)."""
    return r["variant"] + (f" ({r['note']})" if r.get("note") else "")


def machine(data: dict) -> str:
    m = data["machine_info"]
    cpu = m.get("cpu", {}).get("brand_raw", m.get("processor", "?"))
    gpu = m.get("fedunet_gpu")
    cores = m.get("cpu", {}).get("count", "?")
    return f"{gpu} GPU" if gpu else f"{cpu}, {cores} cores"


def is_benchmark_run(path: Path) -> bool:
    """pytest-benchmark output (not a profile, paper-setting, estimate or device-check file)."""
    if path.name.startswith(("profile-", "paper-setting-", "estimate-", "device-check-")):
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "benchmarks" in data and "machine_info" in data


def render(paths: list[Path], results: Path = RESULTS) -> str:
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
            "training >= 70% of a bare loop, serialization from device memory >= 50% of a device-to-host copy) "
            "are not measured. Run `bash scripts/device-check.sh` on a CUDA machine to add them.",
            "",
        ]
    lines += device_sections(results)
    profiles = sorted(results.glob("profile-*.json"))
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


def _gb(x) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def _device_header(data: dict, script: str) -> str:
    """What ran where: the script, the device, torch, the commit and the date of a device report."""
    dev, prov = data["device"], data["provenance"]
    return (
        f"`benchmarks/{script}`{' --dry (tiny sizes)' if data.get('dry') else ''} on {dev.get('name', '?')} "
        f"({dev.get('type', '?')}{', CUDA ' + str(dev['cuda']) if dev.get('cuda') else ''}); torch "
        f"{prov['packages'].get('torch', '?')}; commit {str(prov['git'].get('commit', '?'))[:12]}; {prov['date']}."
    )


def device_sections(results: Path) -> list[str]:
    """scripts/device-check.sh's files: the paper's setting timed, the study's estimated cost, the step
    under each runtime switch, the stages."""
    lines: list[str] = []
    for path in sorted(results.glob("paper-setting-*.json")):
        data = json.loads(path.read_text())
        lines += [
            f"## Paper setting: {path.name}",
            "",
            _device_header(data, "paper_setting.py") + " "
            "Seconds per round are the mean over the rounds (the first includes warm-up); the estimate is "
            "`fedunet estimate`'s prediction of the same run from throughput measured on the same device.",
            "",
            "| d | clients | width | data | rounds | s/round | train s | eval s | train img/s | peak device GB | peak host GB "
            "| estimated / measured |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in data["runs"]:
            n = len(r["round_s"])
            est = r.get("estimate", {}).get("ratio_to_measured")
            est = "-" if est is None else f"{est:.2f}"
            lines.append(
                f"| {r['d']} | {r['clients']} | {r['width']} | {r['dataset']} | {r['rounds']} | {sum(r['round_s']) / n:.2f} "
                f"| {sum(r['train_s']) / n:.2f} | {sum(r['eval_s']) / n:.2f} | {r['train_images_per_s']:,.0f} "
                f"| {_gb(r.get('peak_device_bytes'))} | {_gb(r.get('peak_host_bytes'))} | {est} |"
            )
        lines.append("")
    for path in sorted(results.glob("estimate-*.json")):
        data = json.loads(path.read_text())
        t, prices = data["totals"], data["prices"]
        gpu = prices["device"].startswith("cuda")
        unit = "GPU-hours" if gpu else "job-hours"
        lines += [
            f"## Study cost: {path.name}",
            "",
            f"`fedunet estimate {data['config']}` with images/s {prices['source']} "
            f"({len(prices['models'])} distinct models); {data['provenance']['date']}. Total: **{t['job_s'] / 3600:.1f} {unit}** "
            f"for {int(t['runs'])} runs (rounds alone {t['wall_s'] / 3600:.1f} h), peak device memory per job "
            f"{_gb(t['peak_device_bytes'])} GB, host {_gb(t['peak_host_bytes'])} GB; per job ask for "
            + ", ".join(f"{k} {v}" for k, v in data["slurm"].items())
            + ".",
            "",
            f"| experiment | runs | train PFLOP | eval PFLOP | {unit} | longest job (min) | peak device GB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, e in sorted(data["experiments"].items()):
            lines.append(
                f"| {name} | {int(e['runs'])} | {e['train_flops'] / 1e15:.3f} | {e['eval_flops'] / 1e15:.3f} "
                f"| {e['job_s'] / 3600:.2f} | {e['longest_job_s'] / 60:.1f} | {_gb(e['peak_device_bytes'])} |"
            )
        lines.append("")
    for path in sorted(results.glob("step-variants-*.json")):
        data = json.loads(path.read_text())
        lines += [
            f"## Step variants: {path.name}",
            "",
            _device_header(data, "step_variants.py") + " "
            f"One client's local epoch (`Client.train`), median of {data['epochs']} after a warm-up epoch, with the "
            "device's runtime defaults and with one switch changed at a time; ratio: milliseconds per step over the "
            "defaults' (below 1: that switch makes the step faster).",
            "",
            "| model | client | variant | ms / step | images / s | ratio to the defaults | warm-up epoch s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in data["results"]:
            if "error" in r:  # a variant that raised: its error, not a number
                lines.append(f"| {r['model']} | | {r['variant']} | failed: `{r['error']}` | | | |")
                continue
            ratio = "" if r["ratio_to_defaults"] is None else f"{r['ratio_to_defaults']:.2f}"  # None: the defaults failed
            lines.append(
                f"| {r['model']} (width {r['width']:g}, d {r['d']}) | {r['architecture']} | {variant_label(r)} "
                f"| {r['ms_per_step']:.2f} | {r['images_per_s']:,.0f} | {ratio} | {r['warmup_s']:.1f} |"
            )
        lines.append("")
    for path in sorted(results.glob("device-check-*.json")):
        data = json.loads(path.read_text())
        tests = data.get("cuda_tests", [])
        counts = {o: sum(1 for t in tests if t["outcome"] == o) for o in ("passed", "failed", "error", "skipped")}
        lines += [
            f"## Device check: {path.name}",
            "",
            f"`bash scripts/device-check.sh{' --dry' if data.get('dry') else ''}` on {data['device_label']}: "
            f"{data['total_s']} s of a {data['budget_s']} s budget. CUDA-marked tests: "
            + (", ".join(f"{n} {o}" for o, n in counts.items() if n) or "none ran")
            + ".",
            "",
            "| stage | exit code | seconds |",
            "|---|---|---|",
        ]
        for st in data["stages"]:
            rc = "skipped" if st.get("skipped") else st["rc"]
            lines.append(f"| {st['stage']} | {rc} | {st['seconds']} |")
        failed = [t for t in tests if t["outcome"] in ("failed", "error")]
        if failed:
            lines += ["", "Failed: " + ", ".join(f"`{t['test']}`" for t in failed) + "."]
        lines.append("")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="render benchmark JSON into README.md")
    ap.add_argument("paths", nargs="*", type=Path, help="pytest-benchmark JSON files (default: all in --results)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the results (and of README.md)")
    args = ap.parse_args()
    runs = sorted(p for p in args.results.glob("*.json") if is_benchmark_run(p))
    (args.results / "README.md").write_text(render(args.paths or runs, args.results))
