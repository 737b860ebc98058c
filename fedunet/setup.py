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
from fedunet.data import NORMALIZATION, ImageDataset, load_dataset
from fedunet.model import ModelSpec
from fedunet.partition import POOLED_SCHEMES, Partition, PartitionError, make_partition, pooled


class RunError(RuntimeError):
    """The run cannot start or continue (existing outputs, mismatched checkpoint...)."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose (model init, client data...), the same on every machine."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Runtime:
    """The runtime a run trains with, resolved ("auto" decided) on this machine."""

    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool
    deterministic: bool = True
    compile_backend: str = "inductor"
    threads: int = 1

    def result_settings(self) -> dict:
        """The settings that change a run's numbers (measured: each of them does on CPU), as
        recorded per segment of a run and compared on resume.  CPU threads count only on CPU;
        the compile backend only with compile on."""
        return {
            "device": self.device.type,
            "bf16": self.bf16,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "compile_backend": self.compile_backend if self.compile else None,
            "deterministic": self.deterministic,
            "threads": self.threads if self.device.type == "cpu" else None,
        }


# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); read when its handle is
# created, so it must be set before the first CUDA matmul of the process.
CUBLAS_WORKSPACE = ":4096:8"


def resolve_runtime(cfg: dict) -> Runtime:
    rt = cfg["runtime"]
    name = rt["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"runtime.device: {name!r} requested but CUDA is not available; allowed here: auto, cpu")
    device = torch.device(name)
    if rt["deterministic"] and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if rt["threads"] is not None:
        torch.set_num_threads(rt["threads"])
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if rt["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    bf16 = device.type == "cuda" if rt["bf16"] == "auto" else bool(rt["bf16"])
    channels_last = True if rt["channels_last"] == "auto" else bool(rt["channels_last"])
    return Runtime(
        device,
        bf16,
        channels_last,
        rt["compile"],
        deterministic=rt["deterministic"],
        compile_backend=rt.get("compile_backend", "inductor"),
        threads=torch.get_num_threads(),
    )


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
            fusion_source=m["fusion_source"],
            fusion_head=m["fusion_head"],
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
        if p["scheme"] == "htfl":  # its own rule replaces min_samples
            del want["min_samples"]
            want.update(alpha=p["alpha"], least_samples_batch=p["least_samples_batch"])
        diff = {k: (part.settings.get(k), v) for k, v in want.items() if part.settings.get(k) != v}
        if diff:
            detail = ", ".join(f"partition.{k}: file has {a!r}, config has {b!r}" for k, (a, b) in diff.items())
            raise PartitionError(f"partition.file {p['file']} does not match the config: {detail}")
        return part
    return make_partition(
        dataset.train_labels,
        p["num_clients"],
        p["scheme"],
        p["alpha"],
        p["min_samples"],
        p["test_fraction"],
        seed,
        least_samples_batch=p["least_samples_batch"],
    )


def validation_split(train: list[torch.Tensor], fraction: float, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Carve ``fraction`` of each client's training indices out as its validation split.

    Deterministic per (seed, client) and independent of everything else; with ``fraction``
    0 the training indices are returned unchanged (and empty validation splits).
    """
    kept, val = [], []
    for i, idx in enumerate(train):
        n_val = int(round(len(idx) * fraction))
        if n_val == 0:
            kept.append(idx)
            val.append(idx[:0])
            continue
        g = torch.Generator().manual_seed(derive_seed(seed, "validation", i))
        perm = idx[torch.randperm(len(idx), generator=g)]
        val.append(perm[:n_val].sort().values)
        kept.append(perm[n_val:].sort().values)
    return kept, val


def normalization_stats(cfg: dict, dataset: ImageDataset, train: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std: the dataset's published constants, or the clients' training samples
    (never their held-out, validation or test samples)."""
    name = cfg["dataset"]["name"]
    if cfg["dataset"]["normalization"] == "half":  # HtFLlib's transforms.Normalize(0.5, 0.5)
        channels = dataset.in_channels
        return torch.full((channels,), 0.5), torch.full((channels,), 0.5)
    if cfg["dataset"]["normalization"] == "dataset" and name in NORMALIZATION:
        mean, std = NORMALIZATION[name]
        return torch.tensor(mean), torch.tensor(std)
    return dataset.channel_stats(torch.cat(train))


def load_run_dataset(cfg: dict) -> ImageDataset:
    d = cfg["dataset"]
    data = load_dataset(d["name"], d["root"], d["download"], d["synthetic"], d["max_train"], d["max_test"])
    # the htfl scheme partitions the official train and test splits pooled (PFLlib's datasets)
    return pooled(data) if cfg["partition"]["scheme"] in POOLED_SCHEMES else data
