"""Command line: ``fedunet train | info | partition | validate``.

Bad input ends with a one-paragraph error naming the field and what is allowed (exit
code 2), never with a traceback, and before any data is loaded or model trained.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from fedunet import config as configuration

EXIT_CONFIG, EXIT_DATA, EXIT_RUN, EXIT_IO = 2, 3, 4, 5


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
    t.add_argument("--quiet", action="store_true", help="no progress line")

    v = sub.add_parser("validate", help="check a configuration and print it with defaults filled in")
    _add_config_args(v)

    p = sub.add_parser("partition", help="make a client partition file (and its class-count CSV)")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="partition file to write")
    p.add_argument("--counts", help="also write the clients x classes count matrix as CSV")

    i = sub.add_parser("info", help="parameters, payload bytes and training FLOPs of backbones and U-Nets")
    i.add_argument("--config", help="take dataset geometry, width and d from this run config")
    i.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "fashion-mnist", "synthetic"])
    i.add_argument("--width", type=float, default=None, help="backbone width multiplier (default 1, or the config's)")
    i.add_argument("--d", type=int, default=None, help="U-Net bottleneck size attached for the FLOPs comparison (default 128)")
    i.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024], help="U-Net bottleneck sizes to list")
    i.add_argument("--architectures", nargs="+", default=None, help="backbones to list (default: all)")
    i.add_argument("--measure", action="store_true", help="also measure training throughput (images/s) here")
    i.add_argument("--device", default="cpu", help="device for --measure")
    i.add_argument("--threads", type=int, default=None, help="CPU threads for --measure (default: all cores)")
    i.add_argument("--json", help="write the numbers as JSON too")
    i.add_argument("--methods", action="store_true", help="list the federated methods and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "info":
            return _info(args)
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
        summary = train(cfg, args.out, resume=args.resume, restart_stale=args.restart_stale)
        final = summary["final"]
        print(
            f"done: {args.out}  personalized {100 * final.get('pers_acc', float('nan')):.2f}%  "
            f"global {100 * final.get('global_acc', float('nan')):.2f}%  "
            f"{final['mb_up_per_client']:.4g} MB up/client/round  {summary['timing']['wall_s']:.0f} s"
        )
        return 0
    except configuration.ConfigError as e:
        print(f"fedunet: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as e:  # known failure kinds get a message, not a traceback
        from fedunet.data import DatasetUnavailable
        from fedunet.faults import InjectedFault
        from fedunet.federated import RunError
        from fedunet.partition import PartitionError

        if isinstance(e, DatasetUnavailable):
            print(f"fedunet: {e}", file=sys.stderr)
            return EXIT_DATA
        if isinstance(e, PartitionError):
            print(f"fedunet: invalid configuration: {e}", file=sys.stderr)
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
    from fedunet.setup import load_run_dataset, partition_for

    cfg["partition"]["file"] = None
    data = load_run_dataset(cfg)
    part = partition_for(cfg, data)
    part.save(args.out, data.train_labels)
    if args.counts:
        from fedunet.io import atomic_write_text

        counts = part.class_counts(data.train_labels)
        header = "client," + ",".join(f"class_{k}" for k in range(counts.shape[1]))
        lines = [header] + [f"{i}," + ",".join(map(str, row)) for i, row in enumerate(counts.tolist())]
        atomic_write_text(args.counts, "\n".join(lines) + "\n")
    print(f"{args.out}: {part.num_clients} clients, sha256 {part.content_hash()[:16]}")
    return 0


def _info(args) -> int:
    from fedunet import costs, methods, models
    from fedunet.model import ModelSpec

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.methods:
        for name in methods.available():
            doc = (methods.get(name).__doc__ or sys.modules[methods.get(name).__module__].__doc__ or "").strip()
            print(f"{name:14s} {doc.splitlines()[0] if doc else ''}")
        return 0
    if args.config:
        cfg = configuration.load(args.config)
        dataset = cfg["dataset"]["name"]
        channels, size, classes = costs.geometry(cfg)
        width = args.width if args.width is not None else cfg["model"]["width"]
        d = args.d if args.d is not None else cfg["model"]["unet"]["d"]
    else:
        dataset = args.dataset
        channels, size, classes = costs.GEOMETRY[dataset]
        width = args.width if args.width is not None else 1.0
        d = args.d if args.d is not None else 128
    archs = args.architectures or models.available()
    unknown = [a for a in archs if a not in models.available()]
    if unknown:
        print(f"fedunet: --architectures: unknown {unknown}; allowed: {', '.join(models.available())}", file=sys.stderr)
        return EXIT_CONFIG
    base = dict(in_channels=channels, input_size=size, num_classes=classes, width=width)
    report = {"dataset": dataset, "geometry": [channels, size, classes], "width": width, "d": d, "unets": [], "backbones": []}

    print(f"U-Net sizes ({dataset}: {channels}x{size}x{size}); MB = 10^6 bytes, fp32 unless noted")
    print(
        f"{'d':>5} {'widths':>22} {'bottleneck params':>18} {'bottleneck MB':>14} {'payload MB':>11} "
        f"{'fp16 MB':>8} {'U-Net params':>13} {'U-Net MB':>9}"
    )
    for size_d in args.sizes:
        c = costs.bottleneck_costs(size_d, ModelSpec(architecture=archs[0], unet_d=size_d, **base))
        report["unets"].append(c)
        print(
            f"{size_d:>5} {str(c['widths']):>22} {c['bottleneck_parameters']:>18,} {c['bottleneck_state_bytes'] / 1e6:>14.2f} "
            f"{c['payload_bytes_fp32'] / 1e6:>11.2f} {c['payload_bytes_fp16'] / 1e6:>8.2f} {c['unet_parameters']:>13,} "
            f"{c['unet_state_bytes'] / 1e6:>9.2f}"
        )
    print()
    print(
        f"Backbones (width {width}); FedAvg MB = whole model sent per round; FLOPs = training, per sample; "
        f"+U-Net = with the d={d} U-Net attached"
    )
    head = f"{'backbone':>10} {'params':>12} {'FedAvg MB':>10} {'GFLOPs':>8} {'GFLOPs +U-Net':>14} {'x':>6}"
    if args.measure:
        head += f" {'img/s':>8} {'img/s +U-Net':>13}"
    print(head)
    for arch in archs:
        spec = ModelSpec(architecture=arch, unet_d=d, **base)
        c = costs.backbone_costs(spec)
        line = (
            f"{arch:>10} {c['parameters']:>12,} {c['state_bytes'] / 1e6:>10.1f} {c['train_flops_per_sample'] / 1e9:>8.3f} "
            f"{c['train_flops_per_sample_with_unet'] / 1e9:>14.3f} {c['flops_ratio_with_unet']:>6.2f}"
        )
        if args.measure:
            c["images_per_s"] = costs.measure_throughput(ModelSpec(architecture=arch, unet_d=None, **base), args.device)
            c["images_per_s_with_unet"] = costs.measure_throughput(spec, args.device)
            c["measure_device"] = args.device
            line += f" {c['images_per_s']:>8.0f} {c['images_per_s_with_unet']:>13.0f}"
        report["backbones"].append(c)
        print(line)
    if args.json:
        import torch

        from fedunet import metrics
        from fedunet.io import atomic_write_json

        report["provenance"] = {
            "git": metrics.git_state(),
            "packages": metrics.package_versions(),
            "device": metrics.device_description(torch.device(args.device)),
            "date": metrics.utc_now(),
            "command": " ".join(sys.argv),
        }
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
