"""Command line: ``fedunet train | info | partition | validate | estimate``.

Bad input ends with a one-paragraph error naming the field and what is allowed (exit
code 2, :mod:`fedunet.exit_codes`), never with a traceback, and before any data is loaded or
model trained.  ``train``, ``validate`` and ``partition`` are here; ``info`` and ``estimate``,
which only report, are :mod:`fedunet.cli_info` and :mod:`fedunet.cli_estimate` (their options
and their printing).
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from fedunet import cli_estimate, cli_info
from fedunet import config as configuration
from fedunet.exit_codes import EXIT_CONFIG, EXIT_DATA, EXIT_IO, EXIT_RUN


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="run configuration (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set federated.rounds=20 (repeatable)",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fedunet", description="FedUNet: heterogeneous federated learning with a shared U-Net bottleneck"
    )
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run (or resume) one federated training run")
    _add_config_args(t)
    t.add_argument("--out", required=True, help="output directory (metrics.csv, summary.json, checkpoints)")
    t.add_argument("--resume", action="store_true", help="continue from the directory's last checkpoint")
    t.add_argument(
        "--restart-stale",
        action="store_true",
        help="with --resume: discard outputs made with a different config instead of refusing",
    )
    t.add_argument(
        "--allow-runtime-change",
        action="store_true",
        help="with --resume: continue a checkpoint trained with another device type, bf16, channels_last, compile, "
        "deterministic or CPU thread setting (its numbers then differ from an uninterrupted run's; summary.json "
        "lists the runtime of each segment)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress line")

    v = sub.add_parser("validate", help="check a configuration and print it with defaults filled in")
    _add_config_args(v)

    p = sub.add_parser("partition", help="make a client partition file (and its class-count CSV)")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="partition file to write")
    p.add_argument("--counts", help="also write the clients x classes count matrix as CSV")

    cli_info.add_parser(sub)
    cli_estimate.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "info":
            return cli_info.run(args)
        if args.command == "estimate":
            return cli_estimate.run(args)
        cfg = configuration.load(args.config, args.overrides)
        if args.command == "validate":
            sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        if args.command == "partition":
            return _partition(cfg, args)
        if args.quiet:
            cfg["runtime"]["progress"] = False
        from fedunet import faults
        from fedunet.federated import train

        faults.check_injected_failure(cfg["name"])
        summary = train(
            cfg, args.out, resume=args.resume, restart_stale=args.restart_stale, allow_runtime_change=args.allow_runtime_change
        )
        final = summary["final"]
        metric, unit = ("miou", " mIoU") if "pers_miou" in final else ("acc", "")  # segmentation: mean IoU
        print(
            f"done: {args.out}  personalized{unit} {100 * final.get(f'pers_{metric}', float('nan')):.2f}%  "
            f"global{unit} {100 * final.get(f'global_{metric}', float('nan')):.2f}%  "
            f"{final['mb_up_per_client']:.4g} MB up/client/round  {summary['timing']['wall_s']:.0f} s"
        )
        return 0
    except configuration.ConfigError as e:
        print(f"fedunet: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:  # known failure kinds get a message, not a traceback
        from fedunet.data import DatasetUnavailable
        from fedunet.estimate import EstimateError
        from fedunet.faults import InjectedFault
        from fedunet.federated import RunError
        from fedunet.partition import PartitionError
        from fedunet.study import StudyError

        if isinstance(e, DatasetUnavailable):
            print(f"fedunet: {e}", file=sys.stderr)
            return EXIT_DATA
        if isinstance(e, PartitionError):
            print(f"fedunet: invalid configuration: {e}", file=sys.stderr)
            return EXIT_CONFIG
        if isinstance(e, (EstimateError, StudyError)):
            print(f"fedunet: {e}", file=sys.stderr)
            return EXIT_CONFIG
        if isinstance(e, (RunError, InjectedFault)):
            print(f"fedunet: {e}", file=sys.stderr)
            return EXIT_RUN
        if isinstance(e, OSError):  # disk full, read-only or missing output directory
            where = f" on {e.filename}" if e.filename else ""
            print(
                f"fedunet: I/O error{where}: {e.strerror or e} (results are written atomically: no partial file)", file=sys.stderr
            )
            return EXIT_IO
        raise


def _partition(cfg: dict, args) -> int:
    from fedunet.population import class_counts_of, load_run_dataset, partition_for
    from fedunet.segmentation.runconfig import task

    cfg["partition"]["file"] = None
    data = load_run_dataset(cfg)
    part = partition_for(cfg, data)
    counts = class_counts_of(cfg, data, part)  # segmentation: pixels of each class
    part.save(args.out, data.train_labels, counts)
    if args.counts:
        from fedunet.io import atomic_write_text

        unit = "pixels_class" if task(cfg) == "segmentation" else "class"
        header = "client," + ",".join(f"{unit}_{k}" for k in range(counts.shape[1]))
        lines = [header] + [f"{i}," + ",".join(map(str, row)) for i, row in enumerate(counts.tolist())]
        atomic_write_text(args.counts, "\n".join(lines) + "\n")
    print(f"{args.out}: {part.num_clients} clients, sha256 {part.content_hash()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
