"""A segmentation dataset as tensors (uint8 images and class masks), and what its masks show."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fedunet.data import ImageSplits
from fedunet.partition import Partition

BACKGROUND = 0
IGNORE_INDEX = 255  # pixels no loss or metric counts (object borders in the real datasets)


@dataclass
class SegmentationDataset(ImageSplits):
    """Train and test splits as uint8 images ``(N, C, S, S)`` and uint8 class masks ``(N, S, S)``."""

    TENSORS = ("train_images", "train_masks", "test_images", "test_masks")

    name: str
    train_images: Tensor
    train_masks: Tensor
    test_images: Tensor
    test_masks: Tensor
    num_classes: int  # background included
    class_names: tuple[str, ...]
    settings: dict = field(default_factory=dict)
    # composites come with their client partition (made of the source images before compositing)
    partition: Partition | None = field(default=None, repr=False, compare=False)

    # The engine gathers a batch's targets as ``labels[idx]`` (fedunet.batches): for a segmentation
    # dataset those are the masks (uint8, made int64 per batch by the loader).
    @property
    def train_labels(self) -> Tensor:
        return self.train_masks

    @property
    def test_labels(self) -> Tensor:
        return self.test_masks

    def content_hash(self) -> str:
        """SHA-256 of every tensor's bytes (what "bit-identical" is checked against)."""
        h = hashlib.sha256()
        for t in (getattr(self, name) for name in self.TENSORS):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def class_pixel_counts(masks: Tensor, partition: Partition, num_classes: int) -> np.ndarray:
    """(clients x classes) pixels of each class on each client's canvases (train + held-out);
    :data:`IGNORE_INDEX` pixels are not counted."""
    counts = np.zeros((partition.num_clients, num_classes), dtype=np.int64)
    for i, (tr, te) in enumerate(zip(partition.train, partition.test)):
        m = masks[torch.cat([tr, te]).to(masks.device)].long().flatten()
        counts[i] = torch.bincount(m[m < num_classes], minlength=num_classes).cpu().numpy()
    return counts


def classes_on(masks: Tensor, num_classes: int) -> list[int]:
    """The classes (background excluded) that appear on a set of masks."""
    m = masks.long().flatten()
    present = torch.bincount(m[m < num_classes], minlength=num_classes) > 0
    return [c for c in range(1, num_classes) if bool(present[c])]
