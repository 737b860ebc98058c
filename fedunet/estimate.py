"""What a study costs before it runs: every run's training and evaluation work, priced.

``fedunet estimate STUDY.yaml`` expands the study as the workflow does (``fedunet.study``), and
for every run counts (``fedunet.workload``), per client and round, the samples it trains on and the samples each
evaluation pass reads, exactly as the engine does them:

* training: the client's training samples (its share minus the validation split) x local
  epochs x participation, through its model, plus the method's extra models (FML's meme,
  FedKD's mentee) on the same batches, plus the prototype methods' pass over the training
  samples after local training (eval mode);
* evaluation, every evaluated round (``eval.every``, and the last): the personalized split,
  the validation split (``eval.validation_fraction``), the personalized split three times again
  for the diagnostics of a model with a U-Net (``eval.diagnostics``: each path alone, the bottleneck
  ablated; twice for segmentation), and the
  whole test set for the global protocol (``eval.global``).

Samples become FLOPs (counted on the meta device: ``fedunet.costs``) and seconds through images/s
of each distinct model (``fedunet.throughput``): measured here (``--measure``: training steps and inference passes of
that model at the run's batch sizes, precision, memory format and thread count, on this
machine's device), or given per backbone (``--images-per-s vgg16=2400``: plain backbone training
images/s, as ``fedunet info --measure`` prints them; other models of that backbone are priced by
their FLOPs), or one achieved rate for everything (``--tflops``).  Clients' sample counts are the
expected ones (equal shares of the dataset; a Dirichlet partition varies them around that).

The time covers what a run's ``timing.wall_s`` covers (rounds: training, aggregation,
evaluation); a job also starts a process, loads data and writes a checkpoint every round,
priced separately (``startup_s``, ``checkpoint_s``) for the SLURM time limit.  Peak memory per
job is counted from the models' parameters, gradients and optimizer state, the dataset held on
the device (and its padded copy for random crops), and the activations one training batch
saves for backward (counted on the meta device, fp32: an upper bound under bf16).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch

from fedunet import config as run_config

# What the estimator is made of, importable from here as before it was split up (cli, tests, benchmarks).
from fedunet.costs import (  # noqa: F401
    activation_bytes_per_sample,
    forward_flops_per_sample,
    model_costs,
    parameters_of,
    training_flops_per_sample,
)
from fedunet.throughput import EstimateError, Prices, describe, measure, measure_prices  # noqa: F401
from fedunet.workload import (  # noqa: F401
    PROTOTYPE_METHODS,
    TEST_SIZES,
    ClientWork,
    RunWork,
    dataset_sizes,
    finished_runs,
    run_work,
    run_work_from_summary,
)

# a job's fixed costs, for the SLURM time limit (not in a run's wall_s): interpreter, torch and
# data, models built; a checkpoint is every client's model and optimizer state written and hashed
STARTUP_S = 15.0
DISK_BYTES_PER_S = 300e6
# host memory of the interpreter with torch 2.14 and fedunet imported (measured: 0.69 GB peak RSS
# on CPU); the CUDA libraries (cuBLAS, cuDNN) add ~2.5 GB of host memory once loaded
HOST_BASE_BYTES = 0.75e9
CUDA_HOST_BYTES = 2.5e9
CUDA_CONTEXT_BYTES = 0.6e9


# ------------------------------------------------------------------ study configs


def load_study(path: str | Path) -> dict:
    """A study config with the workflow schema's defaults filled in (when the schema is at hand)."""
    path = Path(path)
    if not path.exists():
        raise EstimateError(f"study config {path} does not exist")
    cfg = run_config.load_yaml(path.read_text()) or {}
    schema_path = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
    if schema_path.exists():
        run_config.fill_defaults(cfg, run_config.load_yaml(schema_path.read_text()))
    return cfg


# ------------------------------------------------------------------ memory and time per job


def peak_memory(run: RunWork, device: str | None = None) -> dict:
    """Peak device and host memory of one job (bytes), from what it holds (see the module doc)."""
    cfg = run.cfg
    n, n_global = dataset_sizes(cfg)
    c, s = run.clients[0].spec.in_channels, run.clients[0].spec.input_size
    pad = cfg["training"]["crop_padding"]
    data = (n + n_global) * c * s * s + (n * c * (s + 2 * pad) ** 2 if pad else 0)  # uint8 on the device
    opt = cfg["optimizer"]
    states = 2 + (2 if opt["name"] == "adam" else (1 if opt.get("momentum", 0) else 0))  # param, grad, moments
    params = sum(parameters_of(w.spec) + sum(parameters_of(a) for a in w.aux) for w in run.clients)
    models = params * 4 * states
    bs = cfg["training"]["batch_size"]
    act = max(
        bs * (activation_bytes_per_sample(w.spec) + sum(activation_bytes_per_sample(a) for a in w.aux)) for w in run.clients
    )
    on_device = data + models + act
    cuda = (device or _device_of(cfg)).startswith("cuda")
    # a checkpoint (parameters and optimizer state of every model) is serialized into host memory, then hashed and written
    checkpoint = params * 4 * (states - 1) if cfg["runtime"]["checkpoint_every"] else 0
    host = HOST_BASE_BYTES + (n + n_global) * c * s * s + checkpoint + (CUDA_HOST_BYTES if cuda else on_device)
    return {
        "device_bytes": on_device + (CUDA_CONTEXT_BYTES if cuda else 0),
        "host_bytes": host,
        "parameters": params,
        "dataset_bytes": data,
        "model_state_bytes": models,
        "activation_bytes": act,
        "checkpoint_bytes": params * 4 * (states - 1),
    }


def _device_of(cfg: dict) -> str:
    name = cfg["runtime"]["device"]
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def price_run(run: RunWork, prices: Prices) -> dict:
    """Seconds, FLOPs and samples of one run (what its ``timing.wall_s`` covers), plus job extras."""
    train_s = eval_s = 0.0
    train_flops = eval_flops = 0.0
    for w in run.clients:
        samples = run.rounds * w.train
        train_s += prices.train_time(w.spec, samples) + sum(prices.train_time(a, samples) for a in w.aux)
        train_flops += samples * (training_flops_per_sample(w.spec) + sum(training_flops_per_sample(a) for a in w.aux))
        evaluated = run.eval_rounds * w.eval + run.rounds * w.after_pass
        eval_s += prices.eval_time(w.spec, evaluated)
        eval_flops += evaluated * forward_flops_per_sample(w.spec)
    memory = peak_memory(run, prices.device)
    every = run.cfg["runtime"]["checkpoint_every"]
    checkpoints = (run.rounds // every + (1 if run.rounds % every else 0)) if every else 0
    checkpoint_s = checkpoints * memory["checkpoint_bytes"] / DISK_BYTES_PER_S
    return {
        "run": run.name,
        "train_samples": run.train_samples(),
        "eval_samples": run.eval_samples(),
        "train_flops": train_flops,
        "eval_flops": eval_flops,
        "train_s": train_s,
        "eval_s": eval_s,
        "wall_s": train_s + eval_s,  # comparable with a run's timing.wall_s
        "startup_s": STARTUP_S,
        "checkpoint_s": checkpoint_s,
        "job_s": STARTUP_S + train_s + eval_s + checkpoint_s,
        **memory,
    }


# what the per-experiment and overall totals add up over their runs (the peaks are maxima)
SUMMED = ("train_flops", "eval_flops", "train_samples", "eval_samples", "wall_s", "job_s")


def _count_run(totals: defaultdict, row: dict) -> None:
    """Add one priced run to ``totals``: the run, its sums, and the largest job's memory and time."""
    totals["runs"] += 1
    for k in SUMMED:
        totals[k] += row[k]
    totals["peak_device_bytes"] = max(totals["peak_device_bytes"], row["device_bytes"])
    totals["peak_host_bytes"] = max(totals["peak_host_bytes"], row["host_bytes"])
    totals["longest_job_s"] = max(totals["longest_job_s"], row["job_s"])


def estimate_study(
    cfg: dict,
    prices: Prices | None = None,
    measure_on: str | None = None,
    threads=None,
    steps=5,
    log=None,
    also_measure: list[RunWork] = (),
    min_seconds: float = 0.5,
    budget_s: float | None = None,
):
    """Price every run of a study; returns (per-run rows, per-experiment totals, overall totals, prices).
    ``also_measure``: further runs whose models are measured with the study's (``--check``)."""
    from fedunet.study import Study

    study = Study(cfg)
    runs = {}
    for key in sorted(study.runs):
        run_cfg = run_config.validate(study.run_config(key))
        runs[key] = run_work(run_cfg, key.path)
    if prices is None:
        if measure_on is None:
            raise EstimateError("no throughput: pass --measure, --images-per-s or --tflops")
        train_threads = cfg.get("resources", {}).get("train", {}).get("threads") if threads is None else threads
        prices = measure_prices(
            [*runs.values(), *also_measure],
            measure_on,
            train_threads,
            steps=steps,
            log=log,
            min_seconds=min_seconds,
            budget_s=budget_s,
        )
    rows = {key: price_run(run, prices) for key, run in runs.items()}
    experiments: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    total = defaultdict(float)
    for key, row in rows.items():
        for exp in study.experiments_of(key):
            _count_run(experiments[exp], row)
        _count_run(total, row)
    return rows, {k: dict(v) for k, v in experiments.items()}, dict(total), prices


def slurm_request(total: dict, threads: int, gpus: int) -> dict:
    """Resources one training job should ask for: the largest job's memory and time with margins
    (host memory x1.25 rounded up to GB; time x1.5 plus 5 minutes, rounded up to 10 minutes)."""
    mem_mb = int(math.ceil(total["peak_host_bytes"] * 1.25 / 1e9)) * 1000
    runtime = int(math.ceil((total["longest_job_s"] * 1.5 / 60 + 5) / 10)) * 10
    out = {"mem_mb": mem_mb, "runtime": runtime, "threads": threads}
    if gpus:
        out["gpu"] = gpus
        out["gpu_memory_gb"] = round(total["peak_device_bytes"] * 1.2 / 1e9, 1)
    return out


def check_against(finished: list[tuple[dict, RunWork]], prices: Prices) -> dict:
    """Estimated against measured ``timing.wall_s`` of finished runs: per run and in total."""
    rows = []
    for summary, work in finished:
        est = price_run(work, prices)["wall_s"]
        rows.append({"run": summary["name"], "measured_s": summary["timing"]["wall_s"], "estimated_s": est})
    measured = sum(r["measured_s"] for r in rows)
    estimated = sum(r["estimated_s"] for r in rows)
    ratios = sorted(r["estimated_s"] / r["measured_s"] for r in rows if r["measured_s"] > 0)
    return {
        "runs": rows,
        "measured_s": measured,
        "estimated_s": estimated,
        "ratio": estimated / measured if measured else None,
        "median_run_ratio": ratios[len(ratios) // 2] if ratios else None,
        "run_ratio_range": [ratios[0], ratios[-1]] if ratios else None,
    }
