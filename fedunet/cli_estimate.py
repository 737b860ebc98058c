"""``fedunet estimate``: a study config priced (``fedunet.estimate``) and printed: hours and FLOPs per
experiment and in total, peak memory per job, the SLURM resources to ask for, optionally checked
against finished runs; ``--json`` writes it all with the images/s it used."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> argparse.ArgumentParser:
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
    return e


def run(args) -> int:
    """Price the study with the throughput the options give (or measure it), print, write ``--json``; exit code.
    Bad options raise ``EstimateError`` (exit code 2 in :func:`fedunet.cli.main`)."""
    import json
    import os

    import torch

    from fedunet import estimate
    from fedunet.model import ModelSpec
    from fedunet.segmodel import SegSpec

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
            spec = SegSpec(**row["spec"]) if row.get("task") == "segmentation" else ModelSpec(**row["spec"])
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
                raise estimate.EstimateError(f"--images-per-s: expected ARCH=N, got {item!r}") from None
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
        from fedunet import provenance
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
                        **({"task": "segmentation"} if type(spec).__name__ == "SegSpec" else {}),
                        "model": estimate.describe(spec),
                        "train_ips": prices.train_ips.get(spec),
                        "eval_ips": prices.eval_ips.get(spec),
                    }
                    for spec in specs
                ],
            },
            "provenance": {
                "git": provenance.git_state(),
                "packages": provenance.package_versions(),
                "device": provenance.device_description(torch.device(prices.device if args.measure else "cpu")),
                "threads": threads,
                "date": provenance.utc_now(),
                "command": " ".join(sys.argv),
            },
        }
        atomic_write_json(args.json, report)
    return 0
