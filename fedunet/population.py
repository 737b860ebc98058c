"""The simulated clients of a run, built from its config, and the data they share on the device.

Every client gets its model (initialized from its own seed), optimizer, training loader,
held-out test and validation indices and random generator; the dataset, moved to the
training device once, is shared by all of them.  The same config and seed build the same
clients on every machine.  The pieces they are built from (dataset, partition, validation
split, normalization, one model spec per client) are pure functions of the config, below, so the
engine, the CLI and the cost estimator build them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from fedunet import methods
from fedunet.batches import Augmentation, ClientLoader, MaskLoader, Normalizer, pad_images, pad_masks
from fedunet.client import Client, make_optimizer
from fedunet.compile import Compiler
from fedunet.data import NORMALIZATION, ImageDataset, load_dataset
from fedunet.determinism import replace_nondeterministic
from fedunet.model import ModelSpec, build_model
from fedunet.partition import POOLED_SCHEMES, Partition, PartitionError, make_partition, pooled
from fedunet.runtime import Runtime, derive_seed
from fedunet.segmentation import run as segmentation
from fedunet.segmentation.dataset import IGNORE_INDEX
from fedunet.segmentation.runconfig import task
from fedunet.segmodel import SegSpec


@dataclass
class Population:
    data: ImageDataset  # on the training device
    normalizer: Normalizer
    partition: Partition
    class_counts: list[list[int]]  # training samples of each class per client
    clients: list[Client]
    compiler: Compiler | None  # torch.compile on: one compiled region per distinct architecture
    task: str = "classification"  # or "segmentation": masks in the place of labels, per-pixel models


def build(cfg: dict, rt: Runtime) -> Population:
    dev = rt.device
    cpu_data = load_run_dataset(cfg)
    partition = partition_for(cfg, cpu_data)
    class_counts = class_counts_of(cfg, cpu_data, partition).tolist()
    train_idx, val_idx = validation_split(partition.train, cfg["eval"]["validation_fraction"], cfg["seed"])
    mean, std = normalization_stats(cfg, cpu_data, train_idx)
    data = cpu_data.to(dev)
    normalizer = Normalizer(mean, std, dev, rt.channels_last)
    aug = Augmentation(cfg["training"]["crop_padding"], cfg["training"]["flip"])
    padded = pad_images(data.train_images, aug.crop_padding) if aug.crop_padding > 0 else None
    loader_class = ClientLoader
    if task(cfg) == "segmentation":  # masks cropped and flipped with their canvases, padded with IGNORE_INDEX
        masks = pad_masks(data.train_masks, aug.crop_padding, IGNORE_INDEX) if aug.crop_padding > 0 else None
        loader_class = partial(MaskLoader, ignore_index=IGNORE_INDEX, padded_masks=masks)
    # one compiled region per distinct architecture, shared by its clients (fedunet/compile.py)
    compiler = Compiler(rt.compile_backend, mode=rt.compile_mode) if rt.compile else None
    cuda_deterministic = rt.device.type == "cuda" and rt.deterministic
    clients: list[Client] = []
    for i, spec in enumerate(model_specs(cfg, data)):
        torch.manual_seed(derive_seed(cfg["seed"], "model", i))
        model = build_model(spec).to(dev)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cuda_deterministic:  # parameter-free swaps: the state_dict is unchanged
            replace_nondeterministic(model)
        gen = torch.Generator(device=dev)
        gen.manual_seed(derive_seed(cfg["seed"], "data", i))
        loader = loader_class(
            data.train_images,
            data.train_labels,
            train_idx[i],
            cfg["training"]["batch_size"],
            gen,
            normalizer,
            aug,
            padded,
            shuffle=cfg["training"]["shuffle"],
            drop_last=cfg["training"]["drop_last"],
        )
        client = Client(
            index=i,
            architecture=spec.architecture,
            model=model,
            optimizer=make_optimizer(model.parameters(), cfg),
            loader=loader,
            test_indices=partition.test[i].to(dev),
            val_indices=val_idx[i].to(dev),
            generator=gen,
            bf16=rt.bf16,
            compiler=compiler,
            cuda_deterministic=cuda_deterministic,
        )
        clients.append(client)
    return Population(data, normalizer, partition, class_counts, clients, compiler, task(cfg))


# ------------------------------------------------------------ what a run is built from: pure functions of the config


def model_specs(cfg: dict, dataset: ImageDataset) -> list[ModelSpec]:
    m = cfg["model"]
    attach = methods.attaches_unet(cfg["method"], m["unet"]["attach"])
    archs = m["architectures"]
    # what a client's model is made of in either task; clients cycle through the architectures
    common = [
        dict(
            architecture=archs[i % len(archs)],
            in_channels=dataset.in_channels,
            input_size=dataset.input_size,
            num_classes=dataset.num_classes,
            width=m["width"],
            unet_d=m["unet"]["d"] if attach else None,
            fusion=m["fusion"],
            min_bottleneck_size=m["unet"]["min_bottleneck_size"],
            max_poolings=m["unet"]["max_poolings"],
        )
        for i in range(cfg["partition"]["num_clients"])
    ]
    if task(cfg) == "segmentation":
        return [SegSpec(**fields) for fields in common]
    method = methods.get(cfg["method"])
    return [
        ModelSpec(
            **fields,
            fusion_source=m["fusion_source"],
            fusion_head=m["fusion_head"],
            feature_width=m["feature_width"] if method.needs_projection else None,
            projection=m["projection"],
        )
        for fields in common
    ]


def partition_for(cfg: dict, dataset: ImageDataset) -> Partition:
    if task(cfg) == "segmentation":
        return segmentation.partition_for(cfg, dataset)
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


def class_counts_of(cfg: dict, dataset: ImageDataset, partition: Partition) -> np.ndarray:
    """(clients x classes) training plus held-out samples of each class per client (segmentation:
    pixels of each class on the client's canvases)."""
    if task(cfg) == "segmentation":
        return segmentation.class_counts(dataset, partition)
    return partition.class_counts(dataset.train_labels)


def load_run_dataset(cfg: dict) -> ImageDataset:
    if task(cfg) == "segmentation":
        return segmentation.load(cfg)  # with its partition, for composites
    d = cfg["dataset"]
    data = load_dataset(d["name"], d["root"], d["download"], d["synthetic"], d["max_train"], d["max_test"])
    # the htfl scheme partitions the official train and test splits pooled (PFLlib's datasets)
    return pooled(data) if cfg["partition"]["scheme"] in POOLED_SCHEMES else data
