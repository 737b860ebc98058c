"""Benchmark suite: speed goals as ratios measured side by side in one pytest-benchmark run.

Each benchmark records ``extra_info = {"case": ..., "impl": ...}``; the goals below pair
two implementations of the same case, and the suite prints (and writes into the JSON)
whether each goal is met.  With ``--benchmark-disable`` (the CI fast mode) every
benchmark body runs once for its correctness assertions and no goal is evaluated.

    bash scripts/bench.sh                                  # full sizes, JSON + Markdown into benchmarks/results/
    .venv/bin/python -m pytest benchmarks                   # fast mode: small sizes, timing disabled (part of CI)
    .venv/bin/python -m pytest benchmarks --bench-device cuda ...   # the same on a GPU (scripts/device-check.sh)
"""

from __future__ import annotations

import os

import pytest
from goals import CHECKS

# (goal, group, reference implementation, ours, minimum ratio, which cases), with
# ratio = median time of the reference / median time of ours: a speed-up when the reference
# is the slow way (torch.save, DataLoader), a fraction of the limit when it is the fast one
# (memcpy, a bare training loop).
GOALS = [
    ("serialization >= 5x faster than torch.save/load", "serialization", "torch", "ours", 5.0, "all"),
    ("serialization >= 50% of memcpy bandwidth (largest payload)", "serialization", "memcpy", "ours", 0.5, "largest"),
    ("data path >= 20x faster than DataLoader + per-sample transforms", "data-path", "dataloader", "ours", 20.0, "all"),
    ("engine round >= 2x faster than the reference loop (CPU)", "engine-round", "reference", "ours", 2.0, "all"),
    ("engine local training >= 85% of a bare loop (CPU)", "engine-throughput", "bare", "ours", 0.85, "all"),
]
# On a GPU the engine's goals are its own, and payloads are serialized from device memory.
GPU_GOALS = GOALS[:3] + [
    ("engine round >= 5x faster than the reference loop (GPU)", "engine-round", "reference", "ours", 5.0, "all"),
    ("engine local training >= 70% of a bare loop (GPU)", "engine-throughput", "bare", "ours", 0.70, "all"),
    (
        "serialization from device memory >= 50% of a device-to-host copy (largest payload)",
        "serialization-device",
        "memcpy",
        "ours",
        0.5,
        "largest",
    ),
]


def goals() -> list[tuple]:
    return GPU_GOALS if os.environ.get("FEDUNET_BENCH_DEVICE", "cpu").startswith("cuda") else GOALS


def pytest_addoption(parser):
    parser.addoption(
        "--bench-size",
        choices=["small", "full"],
        default="small",
        help="small: tiny synthetic inputs, each benchmark once for correctness (the default, run by "
        "the test suite); full: the published sizes (scripts/bench.sh)",
    )
    parser.addoption(
        "--bench-device",
        default=None,
        help="device the engine benchmarks train on and payloads are serialized from (default cpu; "
        "or $FEDUNET_BENCH_DEVICE): cuda on a GPU machine (scripts/device-check.sh)",
    )


def pytest_configure(config):
    device = config.getoption("--bench-device", default=None)
    if device:
        os.environ["FEDUNET_BENCH_DEVICE"] = device


@pytest.fixture(scope="session")
def bench_size(request) -> str:
    return request.config.getoption("--bench-size")


def _median(bench) -> float | None:
    stats = getattr(bench, "stats", None)
    stats = getattr(stats, "stats", stats)
    return getattr(stats, "median", None) if stats is not None else None


def evaluate_goals(benchmarks) -> list[dict]:
    by_case: dict[tuple[str, str], dict[str, object]] = {}
    for b in benchmarks:
        info = b.extra_info
        if "case" in info and _median(b):
            by_case.setdefault((b.group, info["case"]), {})[info["impl"]] = b
    results = []
    for goal, group, slow, fast, minimum, which in goals():  # slow: the reference, fast: ours
        cases = {c: impls for (g, c), impls in by_case.items() if g == group and slow in impls and fast in impls}
        if which == "largest" and cases:
            largest = max(cases, key=lambda c: cases[c][fast].extra_info.get("bytes", 0))
            cases = {largest: cases[largest]}
        for case, impls in sorted(cases.items()):
            ratio = _median(impls[slow]) / _median(impls[fast])
            results.append(
                {
                    "goal": goal,
                    "case": case,
                    "ratio": ratio,
                    "minimum": minimum,
                    "met": ratio >= minimum,
                    "slow": slow,
                    "fast": fast,
                }
            )
        if not cases:
            results.append(
                {"goal": goal, "case": "-", "ratio": None, "minimum": minimum, "met": None, "slow": slow, "fast": fast}
            )
    return results


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["goals"] = evaluate_goals(benchmarks) + CHECKS
    output_json["bench_size"] = config.getoption("--bench-size")
    output_json["bench_device"] = os.environ.get("FEDUNET_BENCH_DEVICE", "cpu")
    # --benchmark-json always includes every round's raw timing (hundreds of thousands for the
    # microsecond cases: 35 MB a run); the committed results keep the summary statistics only.
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    terminalreporter.section("goals (ratios measured side by side in this run)")
    for r in evaluate_goals(session.benchmarks) + CHECKS:
        if r["ratio"] is None:
            terminalreporter.write_line(f"  not measured  {r['goal']}")
            continue
        verdict = "MET   " if r["met"] else "MISSED"
        bound = "<=" if "points apart" in r["goal"] else ">="
        terminalreporter.write_line(f"  {verdict} {r['ratio']:8.2f} ({bound} {r['minimum']})  {r['goal']}  [{r['case']}]")


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    machine_info["fedunet_torch"] = torch.__version__
    machine_info["fedunet_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        machine_info["fedunet_gpu"] = torch.cuda.get_device_name(0)
