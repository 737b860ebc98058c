"""What a model costs: parameters, bytes on the wire, training FLOPs, measured throughput.

The paper calls the U-Net lightweight in traffic; at full input resolution even the
compact U-Net can cost more compute than a narrow backbone.  These numbers put both
costs side by side (``fedunet info``, the workflow's compute table).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fedunet import serialization
from fedunet.model import ClientModel, ModelSpec, count_parameters, select_state, state_nbytes
from fedunet.unet import BOTTLENECK_PREFIX

# (channels, input size, classes) of each dataset, so costs need no data on disk.
GEOMETRY = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "fashion-mnist": (1, 28, 10), "synthetic": (3, 32, 10)}


def geometry(cfg: dict) -> tuple[int, int, int]:
    """(channels, input size, classes) of a run config's dataset, without loading it."""
    ds = cfg["dataset"]
    if ds["name"] == "synthetic":
        syn = ds["synthetic"]
        return syn["channels"], syn["size"], syn["num_classes"]
    return GEOMETRY[ds["name"]]


def training_flops_per_sample(spec: ModelSpec) -> int:
    """Forward + backward FLOPs of one training sample, counted on the meta device (no compute)."""
    with torch.device("meta"):
        model = ClientModel(spec)
        x = torch.empty(2, spec.in_channels, spec.input_size, spec.input_size)
        y = torch.zeros(2, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() // 2


def payload_bytes(tensors: dict, float_dtype: str = "float32") -> int:
    """Length of the real serialized payload (header included)."""
    return len(serialization.encode(tensors, float_dtype=float_dtype))


def bottleneck_costs(d: int, spec: ModelSpec) -> dict:
    """Sizes of the U-Net with bottleneck ``d`` beside a backbone of ``spec``'s geometry."""
    model = ClientModel(ModelSpec(**{**spec.__dict__, "unet_d": d}))
    bottleneck = select_state(model, BOTTLENECK_PREFIX)
    return {
        "d": d,
        "widths": [d // 16, d // 8, d // 4, d // 2, d],
        "bottleneck_parameters": count_parameters(model.unet.bottleneck),
        "bottleneck_state_bytes": state_nbytes(model.unet.bottleneck),
        "payload_bytes_fp32": payload_bytes(bottleneck, "float32"),
        "payload_bytes_fp16": payload_bytes(bottleneck, "float16"),
        "unet_parameters": count_parameters(model.unet),
        "unet_state_bytes": state_nbytes(model.unet),
        "unet_payload_bytes_fp32": payload_bytes(select_state(model, "unet."), "float32"),
    }


def backbone_costs(spec: ModelSpec) -> dict:
    """Plain backbone + classifier (what whole-model FedAvg sends) and its training FLOPs."""
    plain = ModelSpec(**{**spec.__dict__, "unet_d": None})
    model = ClientModel(plain)
    out = {
        "architecture": spec.architecture,
        "width": spec.width,
        "parameters": count_parameters(model),
        "state_bytes": state_nbytes(model),
        "fedavg_payload_bytes_fp32": payload_bytes(model.state_dict(), "float32"),
        "feature_dim": model.backbone.feature_dim,
        "train_flops_per_sample": training_flops_per_sample(plain),
    }
    if spec.unet_d is not None:
        out["unet_d"] = spec.unet_d
        out["train_flops_per_sample_with_unet"] = training_flops_per_sample(spec)
        out["flops_ratio_with_unet"] = out["train_flops_per_sample_with_unet"] / out["train_flops_per_sample"]
    return out


def measure_throughput(
    spec: ModelSpec,
    device: str = "cpu",
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 3,
    channels_last: bool = True,
    bf16: bool | None = None,
) -> float:
    """Training images per second of one model on random data (forward, backward, SGD step)."""
    dev = torch.device(device)
    bf16 = dev.type == "cuda" if bf16 is None else bf16
    torch.manual_seed(0)
    model = ClientModel(spec).to(dev)
    x = torch.randn(batch_size, spec.in_channels, spec.input_size, spec.input_size, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return batch_size * steps / (time.perf_counter() - start)
