"""What a study costs before it runs: every run's training and evaluation work, priced.

``fedunet estimate STUDY.yaml`` expands the study as the workflow does (``fedunet.study``), and
for every run counts, per client and round, the samples it trains on and the samples each
evaluation pass reads, exactly as the engine does them:

* training: the client's training samples (its share minus the validation split) x local
  epochs x participation, through its model, plus the method's extra models (FML's meme,
  FedKD's mentee) on the same batches, plus the prototype methods' pass over the training
  samples after local training (eval mode);
* evaluation, every evaluated round (``eval.every``, and the last): the personalized split,
  the validation split (``eval.validation_fraction``), twice the personalized split again for
  the diagnostics of a model with a U-Net (``eval.diagnostics``: each path alone), and the
  whole test set for the global protocol (``eval.global``).

Samples become FLOPs (counted on the meta device: ``fedunet.costs``) and seconds through images/s
of each distinct model: measured here (``--measure``: training steps and inference passes of
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

import copy
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from fedunet import config as run_config
from fedunet import costs
from fedunet.methods.base import participants
from fedunet.model import ClientModel, ModelSpec, count_parameters
from fedunet.setup import model_specs

TEST_SIZES = {"cifar10": 10000, "cifar100": 10000, "fashion-mnist": 10000}
PROTOTYPE_METHODS = ("fedproto", "fedgh", "fedtgp")
# a job's fixed costs, for the SLURM time limit (not in a run's wall_s): interpreter, torch and
# data, models built; a checkpoint is every client's model and optimizer state written and hashed
STARTUP_S = 15.0
DISK_BYTES_PER_S = 300e6
# host memory of the interpreter with torch 2.14 and fedunet imported (measured: 0.69 GB peak RSS
# on CPU); the CUDA libraries (cuBLAS, cuDNN) add ~2.5 GB of host memory once loaded
HOST_BASE_BYTES = 0.75e9
CUDA_HOST_BYTES = 2.5e9
CUDA_CONTEXT_BYTES = 0.6e9


class EstimateError(ValueError):
    pass


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


# ------------------------------------------------------------------ work per run


class _Geometry:
    """What ``setup.model_specs`` reads from a dataset, without loading one."""

    def __init__(self, cfg: dict):
        self.in_channels, self.input_size, self.num_classes = costs.geometry(cfg)


def dataset_sizes(cfg: dict) -> tuple[int, int]:
    """(samples the clients partition, samples of the global test set) of a run config."""
    ds = cfg["dataset"]
    if ds["name"] == "synthetic":
        train, test = ds["synthetic"]["train_size"], ds["synthetic"]["test_size"]
    else:
        train, test = run_config.KNOWN_TRAIN_SIZES[ds["name"]], TEST_SIZES[ds["name"]]
    if ds["max_train"] is not None:
        train = min(train, ds["max_train"])
    if ds["max_test"] is not None:
        test = min(test, ds["max_test"])
    if cfg["partition"]["scheme"] == "htfl":  # the splits pooled, then partitioned
        train += test
    return train, test


@dataclass
class ClientWork:
    """One client's samples per round (training) and per evaluated round (each pass)."""

    spec: ModelSpec
    train: float  # training samples per round (expected, participation included)
    aux: list[ModelSpec] = field(default_factory=list)  # extra models trained on the same batches
    after_pass: float = 0.0  # eval-mode forward samples per round after training (prototypes)
    eval: float = 0.0  # forward samples per evaluated round (every pass)


@dataclass
class RunWork:
    name: str
    rounds: int
    eval_rounds: int
    clients: list[ClientWork]
    cfg: dict

    def train_samples(self) -> float:
        return self.rounds * sum(c.train for c in self.clients)

    def eval_samples(self) -> float:
        return self.eval_rounds * sum(c.eval for c in self.clients) + self.rounds * sum(c.after_pass for c in self.clients)


def _aux_specs(cfg: dict, spec: ModelSpec, first_arch: str) -> list[ModelSpec]:
    method = cfg["method"]
    hp = cfg.get("methods", {}).get(method, {})
    option = {"fml": "meme", "fedkd": "mentee"}.get(method)
    if option is None:
        return []
    arch = hp.get(option, "fedavg-cnn")
    arch = first_arch if arch == "client0" else arch
    return [ModelSpec(arch, spec.in_channels, spec.input_size, spec.num_classes, width=spec.width, unet_d=None)]


def run_work(cfg: dict, name: str = "", clients: list[dict] | None = None) -> RunWork:
    """The work of one run config (validated, defaults filled in).

    ``clients`` (optional, e.g. from a finished run's summary) gives each client's real
    ``n_train`` (after the validation split) and ``n_test``; else equal shares are assumed.
    """
    specs = model_specs(cfg, _Geometry(cfg))
    k = len(specs)
    n, n_global = dataset_sizes(cfg)
    test_fraction = cfg["partition"]["test_fraction"]
    val_fraction = cfg["eval"].get("validation_fraction", 0.0)
    fed, ev = cfg["federated"], cfg["eval"]
    participation = 1.0 if fed["participation"] >= 1 else participants(fed["participation"], k) / k
    rounds = fed["rounds"]
    eval_rounds = rounds // ev["every"] + (1 if rounds % ev["every"] else 0)
    attach = specs[0].unet_d is not None
    diagnostics = ev.get("diagnostics", False) and attach
    hp = cfg.get("methods", {}).get(cfg["method"], {})
    prototypes_after = cfg["method"] in PROTOTYPE_METHODS and hp.get("prototypes") != "during"
    work = []
    for i, spec in enumerate(specs):
        if clients is not None:  # n_train as summaries record it: after the validation split
            n_train, n_test = clients[i]["n_train"], clients[i]["n_test"]
            n_val = clients[i].get("n_val", round(n_train * val_fraction / (1 - val_fraction)))
        else:
            share = n / k
            n_test = round(share * test_fraction)
            n_val = round((share - n_test) * val_fraction)
            n_train = share - n_test - n_val
        batches_dropped = 1 if n_train % cfg["training"]["batch_size"] == 1 else 0  # a last batch of one is skipped
        trained = (n_train - batches_dropped) * fed["local_epochs"]
        per_eval = n_test + n_val + (2 * n_test if diagnostics else 0) + (n_global if ev["global"] else 0)
        work.append(
            ClientWork(
                spec=spec,
                train=trained * participation,
                aux=_aux_specs(cfg, spec, specs[0].architecture),
                after_pass=n_train * participation if prototypes_after else 0.0,
                eval=per_eval,
            )
        )
    return RunWork(name or cfg["name"], rounds, eval_rounds, work, cfg)


def run_work_from_summary(summary: dict) -> RunWork:
    """The work of a finished run, from its summary.json: its config as it ran (evaluation passes
    the engine did not have yet count as off) and its clients' real sample counts."""
    raw = copy.deepcopy(summary["config"])
    raw.setdefault("eval", {}).setdefault("validation_fraction", 0.0)
    raw["eval"].setdefault("diagnostics", False)
    return run_work(run_config.validate(raw), summary["name"], summary["clients"])


# ------------------------------------------------------------------ FLOPs and memory per model

_COSTS: dict = {}


def model_costs(spec: ModelSpec) -> dict:
    """One training step of ``spec`` on the meta device (no compute, no memory), counted: forward
    and forward + backward FLOPs per sample (as ``fedunet.costs``), the bytes of the tensors one
    sample saves for backward (fp32), and the parameters."""
    if spec not in _COSTS:
        from torch.utils.flop_counter import FlopCounterMode

        saved = 0
        seen: set[int] = set()

        def pack(t):
            nonlocal saved
            if isinstance(t, torch.Tensor) and id(t) not in seen and not isinstance(t, torch.nn.Parameter):
                seen.add(id(t))
                saved += t.numel() * t.element_size()
            return t

        n = 2
        with torch.device("meta"):
            model = ClientModel(spec)
            x = torch.empty(n, spec.in_channels, spec.input_size, spec.input_size)
            y = torch.zeros(n, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = F.cross_entropy(model(x), y)
            forward = counter.get_total_flops()
            loss.backward()
        _COSTS[spec] = {
            "forward_flops": forward // n,
            "train_flops": counter.get_total_flops() // n,
            "activation_bytes": saved // n,
            "parameters": count_parameters(model),
        }
    return _COSTS[spec]


def forward_flops_per_sample(spec: ModelSpec) -> int:
    """Forward FLOPs of one sample (inference)."""
    return model_costs(spec)["forward_flops"]


def training_flops_per_sample(spec: ModelSpec) -> int:
    """Forward + backward FLOPs of one training sample (equal to ``fedunet.costs``' count)."""
    return model_costs(spec)["train_flops"]


def activation_bytes_per_sample(spec: ModelSpec) -> int:
    """Bytes of the tensors one training sample saves for backward (fp32)."""
    return model_costs(spec)["activation_bytes"]


def parameters_of(spec: ModelSpec) -> int:
    return model_costs(spec)["parameters"]


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


# ------------------------------------------------------------------ throughput


def _runtime(cfg: dict, device: str) -> tuple[bool, bool]:
    rt = cfg["runtime"]
    bf16 = device.startswith("cuda") if rt["bf16"] == "auto" else bool(rt["bf16"])
    channels_last = True if rt["channels_last"] == "auto" else bool(rt["channels_last"])
    return bf16, channels_last


def measure(
    spec: ModelSpec,
    device: str,
    batch_size: int,
    train: bool,
    bf16: bool,
    channels_last: bool,
    steps: int = 5,
    warmup: int = 2,
    min_seconds: float = 0.5,
) -> float:
    """Images/s of ``spec`` on ``device``: training steps (forward, backward, SGD step) or
    inference passes, on random data, repeated until ``min_seconds`` have passed."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = ClientModel(spec).to(dev)
    x = torch.randn(batch_size, spec.in_channels, spec.input_size, spec.input_size, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train(train)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            if not train:
                with torch.inference_mode():
                    return model(x).argmax(1)
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warmup):
        step()
    sync()
    done, start = 0, time.perf_counter()
    while done < steps or time.perf_counter() - start < min_seconds:
        step()
        done += 1
        if done >= 50 * steps:
            break
    sync()
    return batch_size * done / (time.perf_counter() - start)


@dataclass
class Prices:
    """Images/s per model, and how each was obtained."""

    device: str
    train_ips: dict = field(default_factory=dict)  # ModelSpec -> training images/s
    eval_ips: dict = field(default_factory=dict)  # ModelSpec -> inference images/s
    source: str = ""
    given: dict = field(default_factory=dict)  # architecture -> plain-backbone training images/s
    tflops: float | None = None
    # FLOP/s achieved by the measured models (median), for the models a time budget left unmeasured
    fitted: dict = field(default_factory=dict)  # {"train": FLOP/s, "eval": FLOP/s}

    def train_time(self, spec: ModelSpec, samples: float) -> float:
        return samples / self._rate(spec, True)

    def eval_time(self, spec: ModelSpec, samples: float) -> float:
        return samples / self._rate(spec, False)

    def _rate(self, spec: ModelSpec, train: bool) -> float:
        table = self.train_ips if train else self.eval_ips
        if spec in table:
            return table[spec]
        flops = training_flops_per_sample(spec) if train else forward_flops_per_sample(spec)
        if spec.architecture in self.given:
            plain = ModelSpec(**{**spec.__dict__, "unet_d": None, "feature_width": None})
            flop_rate = self.given[spec.architecture] * training_flops_per_sample(plain)
            return flop_rate / flops
        if self.tflops:
            return self.tflops * 1e12 / flops
        fitted = self.fitted.get("train" if train else "eval")
        if fitted:
            return fitted / flops
        raise EstimateError(
            f"no throughput for {spec.architecture} (width {spec.width}, d={spec.unet_d}): pass --measure, "
            f"--images-per-s {spec.architecture}=N or --tflops"
        )


def measure_prices(
    runs: list[RunWork],
    device: str,
    threads: int | None,
    steps: int = 5,
    log=None,
    min_seconds: float = 0.5,
    budget_s: float | None = None,
) -> Prices:
    """Measure every distinct model of the study once (training at the runs' batch size, inference
    at their evaluation batch size, both with the runs' bf16 and memory-format settings), the
    models that carry the most FLOPs of the study first.  With ``budget_s``, measuring stops when
    the budget is spent; the models left are priced at the median FLOP/s the measured ones achieved."""
    prices = Prices(device=device, source=f"measured on {device}")
    wanted: dict = {}
    weight: dict = defaultdict(float)  # FLOPs of the study each measurement prices
    for run in runs:
        bf16, cl = _runtime(run.cfg, device)
        bs, ebs = run.cfg["training"]["batch_size"], run.cfg["eval"]["batch_size"]
        for w in run.clients:
            wanted.setdefault((w.spec, True), (bs, bf16, cl))
            # inference at the evaluation batch size (on CPU at most 256: images/s hardly depend on it there)
            wanted.setdefault((w.spec, False), (min(ebs, 1000 if device.startswith("cuda") else 256), bf16, cl))
            weight[(w.spec, True)] += run.rounds * w.train * training_flops_per_sample(w.spec)
            weight[(w.spec, False)] += (run.eval_rounds * w.eval + run.rounds * w.after_pass) * forward_flops_per_sample(w.spec)
            for a in w.aux:
                wanted.setdefault((a, True), (bs, bf16, cl))
                weight[(a, True)] += run.rounds * w.train * training_flops_per_sample(a)
    order = sorted(wanted, key=lambda k: (-weight[k], repr(k)))
    old_threads = torch.get_num_threads()
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        for i, key in enumerate(order):
            spec, train = key
            over = budget_s is not None and time.perf_counter() - start > budget_s
            if over and prices.train_ips and prices.eval_ips:  # at least one of each, to fit both rates
                if log:
                    log(f"  measuring budget of {budget_s:.0f} s spent: {len(order) - i} models priced by FLOPs")
                break
            if over and (prices.train_ips if train else prices.eval_ips):
                continue
            bs, bf16, cl = wanted[key]
            ips = measure(spec, device, bs, train, bf16, cl, steps=steps, min_seconds=min_seconds)
            (prices.train_ips if train else prices.eval_ips)[spec] = ips
            if log:
                log(f"  [{i + 1}/{len(order)}] {'train' if train else 'eval '} {describe(spec):40s} {ips:10.0f} img/s")
    finally:
        torch.set_num_threads(old_threads)
    for mode, table, flops in (
        ("train", prices.train_ips, training_flops_per_sample),
        ("eval", prices.eval_ips, forward_flops_per_sample),
    ):
        rates = sorted(ips * flops(spec) for spec, ips in table.items())
        if rates:
            prices.fitted[mode] = rates[len(rates) // 2]
    return prices


def describe(spec: ModelSpec) -> str:
    unet = f"+U-Net d={spec.unet_d} {spec.fusion}" if spec.unet_d else ""
    if spec.unet_d and (spec.fusion_source, spec.fusion_head) != ("decoder", "linear"):
        unet += f"-{spec.fusion_source}-{spec.fusion_head}"
    proj = f" K={spec.feature_width}" if spec.feature_width else ""
    return f"{spec.architecture} w{spec.width:g}{unet}{proj}"


# ------------------------------------------------------------------ pricing


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
    for key, row in rows.items():
        for exp in study.experiments_of(key):
            e = experiments[exp]
            e["runs"] += 1
            for k in ("train_flops", "eval_flops", "train_samples", "eval_samples", "wall_s", "job_s"):
                e[k] += row[k]
            e["peak_device_bytes"] = max(e["peak_device_bytes"], row["device_bytes"])
            e["peak_host_bytes"] = max(e["peak_host_bytes"], row["host_bytes"])
            e["longest_job_s"] = max(e["longest_job_s"], row["job_s"])
    total = defaultdict(float)
    for row in rows.values():
        total["runs"] += 1
        for k in ("train_flops", "eval_flops", "train_samples", "eval_samples", "wall_s", "job_s"):
            total[k] += row[k]
        total["peak_device_bytes"] = max(total["peak_device_bytes"], row["device_bytes"])
        total["peak_host_bytes"] = max(total["peak_host_bytes"], row["host_bytes"])
        total["longest_job_s"] = max(total["longest_job_s"], row["job_s"])
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


def finished_runs(directory: str | Path) -> list[tuple[dict, RunWork]]:
    """(summary, work) of every finished run below ``directory`` (a study's results folder)."""
    import json

    out = []
    for path in sorted(Path(directory).rglob("summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("status") == "complete" and "timing" in summary:
            out.append((summary, run_work_from_summary(summary)))
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
