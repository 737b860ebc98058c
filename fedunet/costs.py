"""What a model costs, counted without running it: parameters, bytes on the wire, FLOPs per
sample and the activations one training sample saves for backward.

The paper calls the U-Net lightweight in traffic; at full input resolution even the
compact U-Net can cost more compute than a narrow backbone.  These numbers put both
costs side by side (``fedunet info``, the workflow's compute table, ``fedunet estimate``);
measured images/s are :mod:`fedunet.throughput`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fedunet import serialization
from fedunet.model import ClientModel, ModelSpec, build_model, count_parameters, select_state, state_nbytes
from fedunet.segmodel import SegSpec
from fedunet.unet import BOTTLENECK_PREFIX

# (channels, input size, classes) of each dataset, so costs need no data on disk.
GEOMETRY = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "fashion-mnist": (1, 28, 10), "synthetic": (3, 32, 10)}


def geometry(cfg: dict) -> tuple[int, int, int]:
    """(channels, input size, classes) of a run config's dataset, without loading it."""
    ds = cfg["dataset"]
    if ds["name"] == "synthetic":
        syn = ds["synthetic"]
        return syn["channels"], syn["size"], syn["num_classes"]
    if ds["name"] in SEGMENTATION_GEOMETRY:  # canvases, classes with the background
        return SEGMENTATION_GEOMETRY[ds["name"]](ds)
    return GEOMETRY[ds["name"]]


SEGMENTATION_GEOMETRY = {
    "fmnist-composite": lambda ds: (1, ds["composite"]["canvas_size"], 11),
    "synthetic-composite": lambda ds: (1, ds["composite"]["canvas_size"], ds["synthetic"]["num_classes"] + 1),
    "oxford-pet": lambda ds: (3, ds["segmentation"]["size"], 2 if ds["segmentation"]["classes"] == "pet" else 3),
    "voc": lambda ds: (3, ds["segmentation"]["size"], 21),
}


def targets(spec: ModelSpec | SegSpec, n: int, device=None) -> torch.Tensor:
    """Class targets of ``n`` samples for ``spec``'s model (per pixel for a segmentation model)."""
    shape = (n, spec.input_size, spec.input_size) if isinstance(spec, SegSpec) else (n,)
    return torch.randint(0, spec.num_classes, shape, device=device)


_COUNTED: dict = {}


def model_costs(spec: ModelSpec) -> dict:
    """One training step of ``spec`` on the meta device (no compute, no memory), counted: forward
    and forward + backward FLOPs per sample, the bytes of the tensors one sample saves for backward
    (fp32), and the parameters.  Counted once per spec."""
    if spec not in _COUNTED:
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
            model = build_model(spec)
            x = torch.empty(n, spec.in_channels, spec.input_size, spec.input_size)
            y = torch.zeros_like(targets(spec, n, "cpu"), device="meta")
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = F.cross_entropy(model(x), y)
            forward = counter.get_total_flops()
            loss.backward()
        _COUNTED[spec] = {
            "forward_flops": forward // n,
            "train_flops": counter.get_total_flops() // n,
            "activation_bytes": saved // n,
            "parameters": count_parameters(model),
        }
    return _COUNTED[spec]


def forward_flops_per_sample(spec: ModelSpec) -> int:
    """Forward FLOPs of one sample (inference)."""
    return model_costs(spec)["forward_flops"]


def training_flops_per_sample(spec: ModelSpec) -> int:
    """Forward + backward FLOPs of one training sample."""
    return model_costs(spec)["train_flops"]


def activation_bytes_per_sample(spec: ModelSpec) -> int:
    """Bytes of the tensors one training sample saves for backward (fp32)."""
    return model_costs(spec)["activation_bytes"]


def parameters_of(spec: ModelSpec) -> int:
    return model_costs(spec)["parameters"]


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
