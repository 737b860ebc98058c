"""Where a federated round spends its time: our engine and the reference loop under torch.profiler.

    .venv/bin/python benchmarks/profile_engine.py              # the benchmark's full size
    .venv/bin/python benchmarks/profile_engine.py --size small # a tiny synthetic check

Writes ``benchmarks/results/profile-<device>-<stamp>.json``: for each implementation, the
round's wall time without the profiler, and the milliseconds of one profiled round in each
phase (data, forward and backward split into convolution+BatchNorm and the rest, optimizer,
other torch ops, and time outside any torch op: Python, pickling, file I/O).  ``render.py``
turns the newest one into the "Where the time goes" table of ``benchmarks/results/README.md``.

The phases come from annotations: torch's own (``enumerate(DataLoader)``, ``Optimizer.step``,
``autograd::engine::evaluate_function``) and three this script adds around
``ClientModel.forward``, ``Tensor.backward`` and our loader's batches, so that both loops are
cut up by the same rules.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import settings, simulation  # noqa: E402
from reference import ReferenceFL  # noqa: E402

from fedunet.data import ClientLoader  # noqa: E402
from fedunet.model import ClientModel  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = [
    "data",
    "forward: conv + BatchNorm",
    "forward: other layers",
    "backward: conv + BatchNorm",
    "backward: other layers",
    "optimizer",
    "other torch ops (copies, payloads, state loads)",
    "outside torch ops (Python, pickling, file I/O)",
]
CONV_BN_FORWARD = ("aten::conv2d", "aten::batch_norm")
CONV_BN_BACKWARD = ("Convolution", "BatchNorm")


@contextlib.contextmanager
def annotated():
    """Label the forward pass, the backward pass and our loader's batches for the profiler."""
    forward, backward, iterate = ClientModel.forward, torch.Tensor.backward, ClientLoader.__iter__

    def labelled_forward(self, *args, **kwargs):
        with record_function("fedunet.forward"):
            return forward(self, *args, **kwargs)

    def labelled_backward(self, *args, **kwargs):
        with record_function("fedunet.backward"):
            return backward(self, *args, **kwargs)

    def labelled_iter(self):
        batches = iterate(self)
        while True:
            with record_function("fedunet.data"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    ClientModel.forward, torch.Tensor.backward, ClientLoader.__iter__ = labelled_forward, labelled_backward, labelled_iter
    try:
        yield
    finally:
        ClientModel.forward, torch.Tensor.backward, ClientLoader.__iter__ = forward, backward, iterate


def is_conv_bn_backward(name: str) -> bool:
    return name.startswith("autograd::engine::evaluate_function") and any(k in name for k in CONV_BN_BACKWARD)


def outermost(event, match) -> float:
    """Microseconds in the outermost descendants of ``event`` whose name matches."""
    total = 0.0
    for child in event.cpu_children:
        if match(child.name):
            total += child.cpu_time_total
        else:
            total += outermost(child, match)
    return total


def phases(prof, wall_us: float) -> dict[str, float]:
    """Milliseconds per phase of one profiled round, from the top-level events of the thread that
    runs the round.

    On CUDA, autograd runs the backward pass on a device thread of its own while the round's thread
    waits inside ``Tensor.backward``: those events are top-level on their thread and would count the
    backward twice. They only split the waited-for backward into its convolution+BatchNorm share."""
    out = defaultdict(float)
    top = [e for e in prof.events() if e.cpu_parent is None]
    round_threads = Counter(e.thread for e in top if e.name == "fedunet.forward")
    backward_elsewhere = []
    if round_threads:
        main = round_threads.most_common(1)[0][0]
        backward_elsewhere = [e for e in top if e.thread != main]
        top = [e for e in top if e.thread == main]
    for e in top:
        name, t = e.name, e.cpu_time_total
        if name == "fedunet.data" or name.startswith("enumerate(DataLoader)"):
            out["data"] += t
        elif name.startswith("Optimizer."):
            out["optimizer"] += t
        elif name == "fedunet.forward":
            conv = outermost(e, lambda n: n in CONV_BN_FORWARD)
            out["forward: conv + BatchNorm"] += conv
            out["forward: other layers"] += t - conv
        elif name == "fedunet.backward" or name.startswith("autograd::engine::evaluate_function"):
            conv = t if is_conv_bn_backward(name) else outermost(e, is_conv_bn_backward)
            out["backward: conv + BatchNorm"] += conv
            out["backward: other layers"] += t - conv
        else:
            out["other torch ops (copies, payloads, state loads)"] += t
    conv = sum(
        e.cpu_time_total if is_conv_bn_backward(e.name) else outermost(e, is_conv_bn_backward) for e in backward_elsewhere
    )
    conv = min(conv, out["backward: other layers"])  # a share of the waited-for backward, never more
    out["backward: conv + BatchNorm"] += conv
    out["backward: other layers"] -= conv
    out["outside torch ops (Python, pickling, file I/O)"] = max(wall_us - sum(out.values()), 0.0)
    return {p: out.get(p, 0.0) / 1e3 for p in PHASES}


def measure(run_round, rounds: int) -> dict:
    run_round()  # warm-up: first-touch allocations, thread pools
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run_round()
        times.append(time.perf_counter() - t0)
    with annotated(), profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run_round()
        profiled = time.perf_counter() - t0
    return {
        "round_s": statistics.median(times),
        "profiled_round_s": profiled,
        "phases_ms": phases(prof, profiled * 1e6),
        "top_ops": [
            {"name": a.key, "self_cpu_ms": a.self_cpu_time_total / 1e3, "calls": a.count}
            for a in sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:12]
        ],
    }


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--rounds", type=int, default=2, help="unprofiled rounds timed for each implementation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sim = simulation(Path(tmp) / "ours", settings(args.size))
        ref = ReferenceFL(simulation(Path(tmp) / "ref", settings(args.size)))
        rounds = iter(range(1, 1000))
        result = {
            "size": args.size,
            "case": f"{sim.data.name}-{len(sim.clients)}clients",
            "samples_per_round": sum(c.num_train for c in sim.clients),
            "implementations": {
                "ours": measure(lambda: sim.run_round(next(rounds)), args.rounds),
                "reference": measure(ref.round, args.rounds),
            },
        }
    device = torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "cpu"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    result["provenance"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "command": "python benchmarks/profile_engine.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"profile-{device}-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for impl, r in result["implementations"].items():
        print(f"{impl}: {r['round_s']:.3f} s/round")
        for phase, ms in r["phases_ms"].items():
            print(f"  {phase:50s} {ms:9.1f} ms")
    print(path)
    return path


if __name__ == "__main__":
    main()
