"""A segmentation run's pieces, as pure functions of its config (``fedunet/population.py`` calls them
for task ``segmentation``): the dataset with its client partition, the class pixel counts, and the
examples a finished run leaves for figures (``population.model_specs`` makes the clients' SegSpecs).

* ``fmnist-composite`` / ``synthetic-composite``: :func:`~fedunet.segmentation.composites.federated_composites`
  partitions the *source* images (Dirichlet ``partition.alpha`` or IID, ``partition.test_fraction``
  held out, ``partition.min_samples``) and composites each client's canvases from its own share, so
  the classes on a client's canvases follow its label skew; the global test canvases come from the
  official test split.  The partition comes with the dataset.
* ``oxford-pet`` / ``voc``: each image is labelled by its most frequent object class (background if
  it shows none) and the images are partitioned by that label as a classification dataset is.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedunet.data import load_dataset
from fedunet.partition import Partition, PartitionError, make_partition
from fedunet.segmentation import runconfig
from fedunet.segmentation.composites import federated_composites
from fedunet.segmentation.dataset import BACKGROUND, IGNORE_INDEX, SegmentationDataset, class_pixel_counts

EXAMPLES_FILE = "examples.npz"  # what a finished run leaves for the figures (numpy arrays, no pickles)
EXAMPLES = 4  # global test canvases in it


def partition_seed(cfg: dict) -> int:
    p = cfg["partition"]
    return cfg["seed"] if p["seed"] is None else p["seed"]


def load(cfg: dict) -> SegmentationDataset:
    """The run's dataset on the CPU; composites carry the partition they were made with."""
    d, p = cfg["dataset"], cfg["partition"]
    name = d["name"]
    if name in runconfig.COMPOSITE_DATASETS:
        source = None
        if name == "synthetic-composite":
            syn = load_dataset("synthetic", synthetic=d["synthetic"], max_train=d["max_train"])
            source = (syn.train_images, syn.train_labels, syn.test_images, syn.test_labels)
        c = d["composite"]
        ds, part = federated_composites(
            p["num_clients"],
            alpha=None if p["scheme"] == "iid" else p["alpha"],
            root=d["root"],
            download=d["download"],
            options=runconfig.composite_options(cfg),
            uses_per_image=c["uses_per_image"],
            test_fraction=p["test_fraction"],
            min_samples=p["min_samples"],
            global_test_canvases=c["test_canvases"],
            max_source_train=d["max_train"],
            seed=partition_seed(cfg),
            source=source,
        )
        if name == "synthetic-composite":
            k = d["synthetic"]["num_classes"]
            names = ("background",) + tuple(f"class {i}" for i in range(k))
            ds = replace(ds, name=name, num_classes=k + 1, class_names=names)
            part = replace(part, num_classes=k + 1)
        return replace(ds, partition=part)
    from fedunet.segmentation import load_segmentation_dataset

    s = d["segmentation"]
    options = dict(size=s["size"], max_train=d["max_train"], max_test=d["max_test"])
    if name == "oxford-pet":
        options.update(classes=s["classes"], border=s["border"])
    return load_segmentation_dataset(name, d["root"], d["download"], **options)


def image_labels(masks: Tensor, num_classes: int) -> Tensor:
    """Each image's most frequent class other than background (background if it shows none): the
    label a real segmentation dataset is partitioned by."""
    n = len(masks)
    m = masks.reshape(n, -1).long()
    valid = (m < num_classes) & (m != BACKGROUND)
    flat = torch.where(valid, m + num_classes * torch.arange(n)[:, None], torch.full_like(m, n * num_classes))
    counts = torch.bincount(flat.flatten(), minlength=n * num_classes + 1)[:-1].view(n, num_classes)
    return torch.where(counts.sum(1) > 0, counts.argmax(1), torch.full((n,), BACKGROUND))


def partition_for(cfg: dict, dataset: SegmentationDataset) -> Partition:
    """The clients' canvases (images): the partition made with the composites, or one of the real
    dataset's images by their :func:`image_labels`; ``partition.file`` must hold the same one."""
    p = cfg["partition"]
    part = dataset.partition
    if part is None:
        labels = image_labels(dataset.train_masks, dataset.num_classes)
        part = make_partition(labels, p["num_clients"], p["scheme"], p["alpha"], p["min_samples"], p["test_fraction"],
                              partition_seed(cfg))  # fmt: skip
        part = replace(part, num_classes=dataset.num_classes)
    if p["file"]:
        saved = Partition.load(p["file"])
        if saved.content_hash() != part.content_hash():
            raise PartitionError(
                f"partition.file {p['file']} does not match the config: its canvases differ from those "
                f"dataset.{runconfig.options_section(dataset.name)}, partition.* and the seed make"
            )
        return saved
    return part


def class_counts(dataset: SegmentationDataset, partition: Partition) -> np.ndarray:
    """(clients x classes) pixels of each class on each client's canvases (train + held-out)."""
    return class_pixel_counts(dataset.train_masks, partition, dataset.num_classes)


@torch.inference_mode()
def examples(clients, data: SegmentationDataset, normalizer, predict, n: int = EXAMPLES) -> dict[str, np.ndarray]:
    """The first ``n`` global test canvases, their masks and every client's predicted masks
    (``(clients, n, H, W)``), as plain numpy arrays (uint8 and unicode: no object arrays)."""
    images, masks = data.test_images[:n], data.test_masks[:n]
    predictions = []
    for c in clients:
        c.model.eval()
        with c.autocast():
            predictions.append(predict(c, normalizer(images)).argmax(1).to(torch.uint8))
    return {
        "images": images.cpu().numpy(),
        "masks": masks.cpu().numpy(),
        "predictions": torch.stack(predictions).cpu().numpy(),
        "architectures": np.array([c.architecture for c in clients], dtype=str),
        "class_names": np.array(data.class_names, dtype=str),
        "ignore_index": np.array(IGNORE_INDEX, dtype=np.int64),
    }


def save_examples(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` atomically (read back with ``allow_pickle=False``)."""
    from fedunet.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
