"""The paper's setting at full width, a few rounds, timed: what one study job does on this device.

    .venv/bin/python benchmarks/paper_setting.py --out benchmarks/results        # on a GPU machine
    .venv/bin/python benchmarks/paper_setting.py --dry --out /tmp/x               # tiny, any machine

10 clients cycling VGG11/13/16/19 at width 1.0 with the U-Net at d=1024 and at d=128 (add
fusion, the engine's default evaluation: personalized, validation, diagnostics, global), on
CIFAR-10 when it is on disk (``data/``), otherwise synthetic 3x32x32 images of CIFAR-10's
sizes.  For each d: seconds per round split into training, aggregation and evaluation,
training images/s, peak device memory (``torch.cuda.max_memory_allocated``) and host memory
(peak RSS), and what ``fedunet estimate`` predicts for the same run from throughput measured
here, so the estimate of the whole study can be checked on the device it prices.  ``--dry``:
4 clients at width 1/8, d=16, 600 synthetic images, one round (a check that the code runs; its
one round is all warm-up).

Writes ``paper-setting-<device>-<stamp>.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from fedunet import config, estimate
from fedunet.data import DatasetUnavailable, load_dataset
from fedunet.federated import Simulation
from fedunet.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_report import start_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def dataset_section(dry: bool, root: str) -> dict:
    if not dry:
        try:
            load_dataset("cifar10", root, download=False)
            return {"name": "cifar10", "root": root, "download": False}
        except (DatasetUnavailable, OSError):
            pass
    size = (500, 100) if dry else (50000, 10000)
    return {
        "name": "synthetic",
        "synthetic": {"num_classes": 10, "channels": 3, "size": 32, "train_size": size[0], "test_size": size[1]},
    }


def run_config(d: int, dry: bool, device: str, rounds: int, root: str) -> dict:
    return config.validate(
        {
            "name": f"paper-setting-d{d}",
            "seed": 0,
            "method": "fedunet",
            "dataset": dataset_section(dry, root),
            "partition": {"num_clients": 4 if dry else 10, "min_samples": 10, "test_fraction": 0.25},
            "model": {"architectures": ["vgg11", "vgg13", "vgg16", "vgg19"], "width": 0.125 if dry else 1.0, "unet": {"d": d}},
            "federated": {"rounds": rounds},
            "training": {"batch_size": 64},
            "eval": {"batch_size": 1000},
            # --dry: one thread (a shared CI machine; threads that wait on each other there crawl)
            "runtime": {"device": device, "progress": False, "checkpoint_every": 0, "threads": 1 if dry else None},
        }
    )


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def one(d: int, dry: bool, device: str, rounds: int, root: str, check_estimate: bool) -> dict:
    cfg = run_config(d, dry, device, rounds, root)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedunet-paper-setting-") as out:
        sim = Simulation(cfg, out)
        summary = sim.run()
        rows = sim.rows
    total = time.perf_counter() - start
    result = {
        "d": d,
        "clients": cfg["partition"]["num_clients"],
        "width": cfg["model"]["width"],
        "dataset": cfg["dataset"]["name"],
        "rounds": rounds,
        "process_s": total,  # build included
        "wall_s": summary["timing"]["wall_s"],
        "round_s": [r["time_round_s"] for r in rows],
        "train_s": [r["time_train_s"] for r in rows],
        "aggregate_s": [r["time_aggregate_s"] for r in rows],
        "eval_s": [r["time_eval_s"] for r in rows],
        "train_samples_per_round": sum(c["n_train"] for c in summary["clients"]),
        "train_images_per_s": summary["timing"]["train_samples_per_s"],
        "mb_up_per_client": summary["final"]["mb_up_per_client"],
        "pers_acc": summary["final"].get("pers_acc"),
        "peak_host_bytes": peak_rss_bytes(),
        "runtime": summary["provenance"]["runtime"],
    }
    if cuda:
        result["peak_device_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_device_reserved_bytes"] = torch.cuda.max_memory_reserved()
    if check_estimate:
        work = estimate.run_work(cfg, cfg["name"], summary["clients"])
        prices = estimate.measure_prices(
            [work], device, threads=cfg["runtime"]["threads"], steps=1 if dry else 3, min_seconds=0.1 if dry else 0.5
        )
        priced = estimate.price_run(work, prices)
        result["estimate"] = {
            "wall_s": priced["wall_s"],
            "ratio_to_measured": priced["wall_s"] / result["wall_s"],
            "device_bytes": priced["device_bytes"],
            "host_bytes": priced["host_bytes"],
        }
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="tiny sizes, one round (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per run (default 3; --dry 1)")
    ap.add_argument("--d", type=int, nargs="+", default=None, help="bottleneck sizes (default 1024 128; --dry 16)")
    ap.add_argument("--root", default="data", help="where CIFAR-10 is looked for (never downloaded)")
    ap.add_argument("--no-estimate", action="store_true", help="skip the estimator check")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.dry else 3)
    sizes = args.d or ([16] if args.dry else [1024, 128])
    path, report = start_report("paper-setting", args.out, args.device, args.dry, runs=[])
    for d in sizes:
        r = one(d, args.dry, args.device, rounds, args.root, not args.no_estimate)
        report["runs"].append(r)
        atomic_write_json(path, report)  # after every run: a time limit keeps what finished
        peak = f", peak device {r['peak_device_bytes'] / 1e9:.2f} GB" if "peak_device_bytes" in r else ""
        est = f", estimated {r['estimate']['wall_s']:.1f} s" if "estimate" in r else ""
        print(
            f"[paper-setting] d={d}: {r['wall_s']:.1f} s for {rounds} round(s) ({r['train_images_per_s']:,.0f} training img/s)"
            f"{est}{peak}, peak host {r['peak_host_bytes'] / 1e9:.2f} GB",
            flush=True,
        )
    print(f"[paper-setting] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
