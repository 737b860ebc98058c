"""Copy the finished runs of a study trained elsewhere (a clean worktree, another machine) into
this checkout, so that they can be committed while the rest of the study goes on:

    python scripts/collect-finished-runs.py /work/s/results/fmnist results/fmnist

A run is finished when its ``summary.json`` exists. Everything of a finished run is copied except
what only resuming needs (``ckpt-*``, ``checkpoint.json``) and hidden files (locks); its training
log (``logs/train/<run>.log``) and the study's partitions come along. Runs still in flight are left
where they are. Files are copied with their times; an existing copy is overwritten.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SKIPPED = ("ckpt-", "checkpoint.json", ".")


def collect(src: Path, dst: Path) -> list[Path]:
    """Copy every finished run of the study directory ``src`` into ``dst``; returns the runs (relative)."""
    if not (src / "runs").is_dir():
        raise SystemExit(f"{src} has no runs/ directory: expected a study's results directory, e.g. results/fmnist")
    copied = []
    for summary in sorted((src / "runs").glob("**/summary.json")):
        run = summary.parent.relative_to(src / "runs")
        out = dst / "runs" / run
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(summary.parent.iterdir()):
            if f.is_file() and not f.name.startswith(SKIPPED):
                shutil.copy2(f, out / f.name)
        log = src / "logs" / "train" / f"{run}.log"
        if log.exists():
            (dst / "logs" / "train" / run).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, dst / "logs" / "train" / f"{run}.log")
        copied.append(run)
    if (src / "partitions").is_dir():
        shutil.copytree(src / "partitions", dst / "partitions", dirs_exist_ok=True)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the study's results directory where it trains")
    parser.add_argument("dst", type=Path, help="the same study's results directory in this checkout")
    args = parser.parse_args()
    runs = collect(args.src, args.dst)
    print(f"{len(runs)} finished runs copied from {args.src} to {args.dst}")


if __name__ == "__main__":
    main()
