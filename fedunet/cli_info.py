"""``fedunet info``: parameters, payload bytes and training FLOPs of backbones and U-Nets, as tables
(``--json`` too), optionally with images/s measured here; ``--methods`` lists the federated methods."""

from __future__ import annotations

import argparse
import sys

from fedunet import config as configuration
from fedunet.exit_codes import EXIT_CONFIG


def add_parser(sub) -> argparse.ArgumentParser:
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
    return i


def run(args) -> int:
    """Print (and with ``--json`` write) the tables; exit code."""
    from fedunet import costs, methods, models, throughput
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
            c["images_per_s"] = throughput.measure_throughput(ModelSpec(architecture=arch, unet_d=None, **base), args.device)
            c["images_per_s_with_unet"] = throughput.measure_throughput(spec, args.device)
            c["measure_device"] = args.device
            line += f" {c['images_per_s']:>8.0f} {c['images_per_s_with_unet']:>13.0f}"
        report["backbones"].append(c)
        print(line)
    if args.json:
        import torch

        from fedunet import provenance
        from fedunet.io import atomic_write_json

        report["provenance"] = {
            "git": provenance.git_state(),
            "packages": provenance.package_versions(),
            "device": provenance.device_description(torch.device(args.device)),
            "date": provenance.utc_now(),
            "command": " ".join(sys.argv),
        }
        atomic_write_json(args.json, report)
    return 0
