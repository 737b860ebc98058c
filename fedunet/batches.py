"""Training and evaluation batches on the device: batched augmentation, normalization, loaders.

Training batches are gathered from a client's index tensor with the client's own generator,
augmented as a batch (random crop with zero padding, horizontal flip) and normalized on the
device: no per-sample Python and no host/device copies inside the training loop.  The datasets
themselves are loaded by :mod:`fedunet.data`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int = 4
    flip: bool = True


def pad_images(images: Tensor, padding: int) -> Tensor:
    return F.pad(images, (padding,) * 4)


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Batched random crop after zero padding; returns a channels_last-strided batch."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # B, H+2p, W+2p, C
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def crop_flip_grid(padded: Tensor, b: int, padding: int, flip: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The rows ``(b, h)`` and columns ``(b, w)`` of ``b`` random crops (and horizontal flips) of
    maps padded by ``padding`` on each side: the random draws of one augmented batch, in a fixed
    order (row offsets, column offsets, flips), so that images and their masks move together."""
    dev = padded.device
    h, w = padded.shape[-2] - 2 * padding, padded.shape[-1] - 2 * padding
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding > 0:
        rows = rows + torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
        cols = cols + torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    return rows, cols


def gather_augmented(padded: Tensor, idx: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Gather a batch from a dataset padded once up front, random-cropped and flipped, in one
    indexing operation (what ``random_flip(random_crop(images[idx]))`` computes, with the same
    random draws, at a fraction of the memory traffic). Returns a channels_last-strided batch."""
    rows, cols = crop_flip_grid(padded, len(idx), padding, flip, generator)
    return padded[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def pad_masks(masks: Tensor, padding: int, fill: int) -> Tensor:
    """Masks ``(N, H, W)`` padded with ``fill`` (a class no loss or metric counts)."""
    return F.pad(masks, (padding,) * 4, value=fill)


class Normalizer:
    """uint8 -> float, per-channel standardization, optionally channels_last."""

    def __init__(self, mean: Tensor, std: Tensor, device: torch.device, channels_last: bool = False):
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device)
        self.channels_last = channels_last

    def __call__(self, x: Tensor) -> Tensor:
        x = x.float() * self.scale + self.shift
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class ClientLoader:
    """Shuffled training batches over one client's indices, with its own generator.

    Each epoch draws one permutation; batches are gathered, augmented and normalized on
    the device.  A trailing batch of a single sample is skipped (BatchNorm cannot train
    on it).  ``shuffle=False`` visits the indices in their stored order every epoch and
    draws nothing for it; ``drop_last=True`` skips any incomplete last batch (HtFLlib's
    ``DataLoader(shuffle=False, drop_last=True)``).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        indices: Tensor,
        batch_size: int,
        generator: torch.Generator,
        normalizer: Normalizer,
        augmentation: Augmentation | None,
        padded_images: Tensor | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
    ):
        self.images, self.labels = images, labels
        self.indices = indices.to(images.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = generator
        self.normalize = normalizer
        self.augmentation = augmentation
        # the dataset zero-padded once, shared by all clients (made here if not given)
        self.padded = padded_images
        if augmentation is not None and augmentation.crop_padding > 0 and padded_images is None:
            self.padded = pad_images(images, augmentation.crop_padding)

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size
        return n // b + (1 if n % b > 1 and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shuffle:
            order = self.indices[torch.randperm(len(self.indices), generator=self.generator, device=self.indices.device)]
        else:
            order = self.indices
        smallest = self.batch_size if self.drop_last else 2
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) < smallest:
                break
            yield self.batch(idx)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The samples ``idx``, augmented and normalized, and their labels."""
        aug = self.augmentation
        if aug is None:
            x = self.images[idx]
        else:
            source = self.padded if aug.crop_padding > 0 else self.images
            x = gather_augmented(source, idx, aug.crop_padding, aug.flip, self.generator)
        return self.normalize(x), self.labels[idx]


class MaskLoader(ClientLoader):
    """A :class:`ClientLoader` over segmentation canvases: ``labels`` are class masks ``(N, H, W)``
    (uint8), cropped and flipped with their images (the same rows and columns), padded with
    ``ignore_index`` so that padding never counts as a class, and returned as int64."""

    def __init__(self, *args, ignore_index: int, padded_masks: Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        aug = self.augmentation
        self.padded_masks = padded_masks
        if aug is not None and aug.crop_padding > 0 and padded_masks is None:
            self.padded_masks = pad_masks(self.labels, aug.crop_padding, ignore_index)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        aug = self.augmentation
        if aug is None:
            return self.normalize(self.images[idx]), self.labels[idx].long()
        images, masks = (self.padded, self.padded_masks) if aug.crop_padding > 0 else (self.images, self.labels)
        rows, cols = crop_flip_grid(images, len(idx), aug.crop_padding, aug.flip, self.generator)
        r, c = rows[:, :, None], cols[:, None, :]
        x = images[idx[:, None, None], :, r, c].permute(0, 3, 1, 2)
        if not self.normalize.channels_last:  # the batch in the memory format the runtime asks for
            x = x.clone(memory_format=torch.contiguous_format)  # (strides too: one channel is "both")
        return self.normalize(x), masks[idx[:, None, None], r, c].long()


def eval_batches(images: Tensor, labels: Tensor, indices: Tensor | None, batch_size: int, normalizer: Normalizer):
    """Sequential, unaugmented batches for evaluation."""
    n = len(labels) if indices is None else len(indices)
    for start in range(0, n, batch_size):
        if indices is None:
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
        else:
            idx = indices[start : start + batch_size]
            x, y = images[idx], labels[idx]
        yield normalizer(x), y
