"""From a validated run config to the pieces a simulation is built from.

The runtime (device, threads, precision), one model spec per client, the client partition
and the dataset: each is a pure function of the config, so the engine, the CLI and the
benchmarks build them the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from fedunet import methods
from fedunet.data import ImageDataset, load_dataset
from fedunet.model import ModelSpec
from fedunet.partition import Partition, PartitionError, make_partition


class RunError(RuntimeError):
    """The run cannot start or continue (existing outputs, mismatched checkpoint...)."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose (model init, client data...), the same on every machine."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool


def resolve_runtime(cfg: dict) -> Runtime:
    rt = cfg["runtime"]
    name = rt["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"runtime.device: {name!r} requested but CUDA is not available; allowed here: auto, cpu")
    device = torch.device(name)
    if rt["threads"] is not None:
        torch.set_num_threads(rt["threads"])
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if rt["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    bf16 = device.type == "cuda" if rt["bf16"] == "auto" else bool(rt["bf16"])
    channels_last = True if rt["channels_last"] == "auto" else bool(rt["channels_last"])
    return Runtime(device, bf16, channels_last, rt["compile"])


def model_specs(cfg: dict, dataset: ImageDataset) -> list[ModelSpec]:
    m = cfg["model"]
    attach = m["unet"]["attach"]
    if attach == "auto":
        attach = methods.get(cfg["method"]).attach_unet
    archs = m["architectures"]
    method = methods.get(cfg["method"])
    return [
        ModelSpec(
            architecture=archs[i % len(archs)],
            in_channels=dataset.in_channels,
            input_size=dataset.input_size,
            num_classes=dataset.num_classes,
            width=m["width"],
            unet_d=m["unet"]["d"] if attach else None,
            fusion=m["fusion"],
            min_bottleneck_size=m["unet"]["min_bottleneck_size"],
            max_poolings=m["unet"]["max_poolings"],
            feature_width=m["feature_width"] if method.needs_projection else None,
            projection=m["projection"],
        )
        for i in range(cfg["partition"]["num_clients"])
    ]


def partition_for(cfg: dict, dataset: ImageDataset) -> Partition:
    p = cfg["partition"]
    seed = cfg["seed"] if p["seed"] is None else p["seed"]
    if p["file"]:
        part = Partition.load(p["file"])
        want = dict(
            num_clients=p["num_clients"],
            scheme=p["scheme"],
            alpha=p["alpha"] if p["scheme"] == "dirichlet" else None,
            min_samples=p["min_samples"],
            test_fraction=p["test_fraction"],
            seed=seed,
            num_samples=len(dataset.train_labels),
        )
        diff = {k: (part.settings.get(k), v) for k, v in want.items() if part.settings.get(k) != v}
        if diff:
            detail = ", ".join(f"partition.{k}: file has {a!r}, config has {b!r}" for k, (a, b) in diff.items())
            raise PartitionError(f"partition.file {p['file']} does not match the config: {detail}")
        return part
    return make_partition(
        dataset.train_labels, p["num_clients"], p["scheme"], p["alpha"], p["min_samples"], p["test_fraction"], seed
    )


def load_run_dataset(cfg: dict) -> ImageDataset:
    d = cfg["dataset"]
    return load_dataset(d["name"], d["root"], d["download"], d["synthetic"], d["max_train"], d["max_test"])
