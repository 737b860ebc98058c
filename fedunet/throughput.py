"""Images/s of models on this machine's device, and the prices of a study made from them.

:func:`measure` times training steps or inference passes of one model on random data (``fedunet
info --measure`` through :func:`measure_throughput`, ``fedunet estimate --measure`` through
:func:`measure_prices`); :class:`Prices` turns samples into seconds from measured, given or
FLOP-scaled rates.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from fedunet.costs import forward_flops_per_sample, targets, training_flops_per_sample
from fedunet.model import ModelSpec, build_model
from fedunet.runtime import precision_and_layout

if TYPE_CHECKING:
    from fedunet.workload import RunWork


class EstimateError(ValueError):
    """A study that cannot be priced: no config, or no throughput for one of its models."""


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
    inference passes, on random data; at least ``steps`` of them after ``warmup`` untimed ones,
    repeated until ``min_seconds`` have passed (at most ``50 * steps``)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(spec).to(dev)
    x = torch.randn(batch_size, spec.in_channels, spec.input_size, spec.input_size, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = targets(spec, batch_size, dev)  # per pixel for a segmentation model
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


def measure_throughput(
    spec: ModelSpec,
    device: str = "cpu",
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 3,
    channels_last: bool = True,
    bf16: bool = False,
) -> float:
    """Training images per second of one model on random data (forward, backward, SGD step):
    exactly ``steps`` timed steps; fp32 unless ``bf16``, as the runs' default."""
    return measure(spec, device, batch_size, True, bf16, channels_last, steps=steps, warmup=warmup, min_seconds=0.0)



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
            plain = replace(spec, unet_d=None, **({"feature_width": None} if hasattr(spec, "feature_width") else {}))
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
        bf16, cl = precision_and_layout(run.cfg["runtime"], torch.device(device).type)
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
    """A model in one short line (for logs and reports): backbone, width, U-Net, projection."""
    unet = f"+U-Net d={spec.unet_d} {spec.fusion}" if spec.unet_d else ""
    reading = (getattr(spec, "fusion_source", "decoder"), getattr(spec, "fusion_head", "linear"))
    if spec.unet_d and reading != ("decoder", "linear"):
        unet += f"-{reading[0]}-{reading[1]}"
    proj = f" K={spec.feature_width}" if getattr(spec, "feature_width", None) else ""
    return f"{spec.architecture} w{spec.width:g}{unet}{proj}"
