"""Command line: ``fedunet train | info | partition | validate | estimate``.

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

    e = sub.add_parser(
        "estimate",
        help="price a study config: GPU/CPU hours per experiment and in total, peak memory per job, SLURM resources",
    )
    e.add_argument("study", help="study config (YAML), e.g. config/config.yaml")
    e.add_argument("--measure", action="store_true", help="measure images/s of every distinct model here (on --device)")
    e.add_argument("--device", default="auto", help="device for --measure (default: cuda if available, else cpu)")
    e.add_argument(
        "--threads", type=int, default=None, help="CPU threads for --measure (default: the study's resources.train.threads)"
    )
    e.add_argument("--steps", type=int, default=5, help="timed steps per model for --measure (and at least --min-seconds)")
    e.add_argument("--min-seconds", type=float, default=0.5, help="time each model at least this long (--measure)")
    e.add_argument(
        "--measure-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop measuring after this long (models carrying the most FLOPs first); the rest are priced at the "
        "median FLOP/s of the measured ones",
    )
    e.add_argument(
        "--images-per-s",
        dest="images_per_s",
        action="append",
        default=[],
        metavar="ARCH=N",
        help="training images/s of the plain ARCH backbone at the study's width (fedunet info --measure prints them); "
        "other models on ARCH are priced by their FLOPs (repeatable)",
    )
    e.add_argument("--tflops", type=float, default=None, help="achieved TFLOP/s for models without another price")
    e.add_argument("--prices", help="reuse the measured images/s of an earlier --json (same device)")
    e.add_argument(
        "--cores", type=int, default=None, help="cores of the machine running snakemake --cores all (default: this one's)"
    )
    e.add_argument("--runs", action="store_true", help="also print every run")
    e.add_argument(
        "--check",
        metavar="DIR",
        help="also price the finished runs below DIR (e.g. results/quick) and compare with their measured timing.wall_s",
    )
    e.add_argument("--json", help="write everything (runs, experiments, totals, images/s) as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "estimate":
            return _estimate(args)
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
        from fedunet.estimate import EstimateError
        from fedunet.faults import InjectedFault
        from fedunet.study import StudyError
        from fedunet.federated import RunError
        from fedunet.partition import PartitionError

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


def _estimate(args) -> int:
    import json
    import os

    import torch

    from fedunet import estimate
    from fedunet.model import ModelSpec

    cfg = estimate.load_study(args.study)
    device = args.device
    if device == "auto":  # measured: where we are; given: what the study's jobs ask for
        if args.measure:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = "cuda" if cfg.get("resources", {}).get("train", {}).get("gpu") else "cpu"
    prices = None
    if args.prices:
        data = json.loads(open(args.prices).read())["prices"]
        prices = estimate.Prices(device=data["device"], source=f"measured on {data['device']} ({args.prices})")
        for row in data["models"]:
            spec = ModelSpec(**row["spec"])
            if row.get("train_ips"):
                prices.train_ips[spec] = row["train_ips"]
            if row.get("eval_ips"):
                prices.eval_ips[spec] = row["eval_ips"]
    if args.images_per_s or args.tflops:
        given = {}
        for item in args.images_per_s:
            arch, _, value = item.partition("=")
            try:
                given[arch] = float(value)
            except ValueError:
                print(f"fedunet: --images-per-s: expected ARCH=N, got {item!r}", file=sys.stderr)
                return EXIT_CONFIG
        prices = prices or estimate.Prices(device=device, source="given")
        prices.given.update(given)
        prices.tflops = args.tflops
    log = (lambda line: print(line, file=sys.stderr)) if args.measure else None
    if args.measure:
        print(f"measuring every distinct model of {args.study} on {device}...", file=sys.stderr)
    finished = estimate.finished_runs(args.check) if args.check else []
    rows, experiments, total, prices = estimate.estimate_study(
        cfg,
        prices,
        measure_on=device if args.measure else None,
        threads=args.threads,
        steps=args.steps,
        log=log,
        also_measure=[work for _, work in finished],
        min_seconds=args.min_seconds,
        budget_s=args.measure_budget,
    )
    train_res = cfg.get("resources", {}).get("train", {})
    threads = args.threads or train_res.get("threads", 1)
    gpus = train_res.get("gpu", 0)
    on_gpu = prices.device.startswith("cuda")
    unit = "GPU-h" if on_gpu else "job-h"
    cores = args.cores or os.cpu_count() or 1
    parallel = 1 if on_gpu else max(1, cores // threads)

    def gb(x):
        return f"{x / 1e9:.2f}"

    print(f"study {cfg['study']}: {int(total['runs'])} training runs; images/s {prices.source}")
    head = (
        f"{'experiment':16s} {'runs':>5s} {'train PFLOP':>12s} {'eval PFLOP':>11s} {'train Msamp':>12s} "
        f"{'eval Msamp':>11s} {unit:>9s} {'core-h' if not on_gpu else '':>8s} {'peak dev GB':>12s} {'peak host GB':>13s}"
    )
    print(head)
    for name, e in sorted(experiments.items()):
        hours = e["job_s"] / 3600
        print(
            f"{name:16s} {int(e['runs']):>5d} {e['train_flops'] / 1e15:>12.3f} {e['eval_flops'] / 1e15:>11.3f} "
            f"{e['train_samples'] / 1e6:>12.2f} {e['eval_samples'] / 1e6:>11.2f} {hours:>9.2f} "
            f"{(f'{hours * threads:.2f}') if not on_gpu else '':>8} {gb(e['peak_device_bytes']):>12s} "
            f"{gb(e['peak_host_bytes']):>13s}"
        )
    hours = total["job_s"] / 3600
    print(
        f"{'total (unique)':16s} {int(total['runs']):>5d} {total['train_flops'] / 1e15:>12.3f} "
        f"{total['eval_flops'] / 1e15:>11.3f} "
        f"{total['train_samples'] / 1e6:>12.2f} {total['eval_samples'] / 1e6:>11.2f} {hours:>9.2f} "
        f"{(f'{hours * threads:.2f}') if not on_gpu else '':>8} {gb(total['peak_device_bytes']):>12s} "
        f"{gb(total['peak_host_bytes']):>13s}"
    )
    print(
        f"(experiments share runs, so their rows add up to more than the total; hours include {estimate.STARTUP_S:.0f} s of "
        f"start-up and the checkpoint writes of each job; the rounds alone, what timing.wall_s measures: "
        f"{total['wall_s'] / 3600:.2f} h)"
    )
    if on_gpu:
        print(f"snakemake --cores all with one GPU: about {hours:.1f} h; with G GPUs about {hours:.1f}/G h")
    else:
        print(
            f"snakemake --cores all on {cores} cores ({parallel} jobs of {threads} thread(s) at once): "
            f"about {hours / parallel:.1f} h"
        )
    gpus = gpus if on_gpu else 0
    req = estimate.slurm_request(total, threads, gpus)
    print(
        f"per training job (resources.train / SLURM): mem_mb >= {req['mem_mb']}, runtime >= {req['runtime']} min "
        f"(longest job {total['longest_job_s'] / 60:.1f} min), threads {threads}"
        + (f", {gpus} GPU with >= {req['gpu_memory_gb']} GB" if gpus else "")
    )
    check = None
    if finished:
        check = estimate.check_against(finished, prices)
        print(
            f"check against {len(finished)} finished runs in {args.check}: measured {check['measured_s']:.0f} s, "
            f"estimated {check['estimated_s']:.0f} s (ratio {check['ratio']:.2f}; per run median "
            f"{check['median_run_ratio']:.2f}, range {check['run_ratio_range'][0]:.2f}-{check['run_ratio_range'][1]:.2f})"
        )
    if args.runs:
        for key, row in sorted(rows.items()):
            print(
                f"  {key.path:55s} {row['wall_s']:9.1f} s rounds  {row['job_s']:9.1f} s job  "
                f"dev {gb(row['device_bytes'])} GB  host {gb(row['host_bytes'])} GB"
            )
    if args.json:
        from fedunet import metrics
        from fedunet.io import atomic_write_json

        specs = sorted(set(prices.train_ips) | set(prices.eval_ips), key=repr)
        report = {
            "study": cfg["study"],
            "config": str(args.study),
            "totals": total,
            "experiments": experiments,
            "runs": {key.path: row for key, row in rows.items()},
            "slurm": req,
            "check": check,
            "prices": {
                "device": prices.device,
                "source": prices.source,
                "given_images_per_s": prices.given,
                "tflops": prices.tflops,
                "fitted_flops_per_s": prices.fitted,
                "models": [
                    {
                        "spec": dict(spec.__dict__),
                        "model": estimate.describe(spec),
                        "train_ips": prices.train_ips.get(spec),
                        "eval_ips": prices.eval_ips.get(spec),
                    }
                    for spec in specs
                ],
            },
            "provenance": {
                "git": metrics.git_state(),
                "packages": metrics.package_versions(),
                "device": metrics.device_description(torch.device(prices.device if args.measure else "cpu")),
                "threads": threads,
                "date": metrics.utc_now(),
                "command": " ".join(sys.argv),
            },
        }
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
