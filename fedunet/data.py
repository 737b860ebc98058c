"""Datasets as uint8 tensors on the training device, batched on-device augmentation.

Datasets are chosen by name (``cifar10``, ``cifar100``, ``fashion-mnist``, ``synthetic``)
and loaded once into ``uint8`` tensors ``(N, C, H, W)``.  Training batches are gathered
from a client's index tensor with the client's own generator, augmented as a batch
(random crop with zero padding, horizontal flip) and normalized on the device: no
per-sample Python and no host/device copies inside the training loop.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "synthetic")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing and could not be downloaded."""


@dataclass
class ImageDataset:
    """Train and test splits as uint8 image tensors and int64 labels."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_images.shape[-1]

    def to(self, device: torch.device | str) -> ImageDataset:
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
        )

    def channel_stats(self, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std in [0, 1] units of the training images (only ``indices`` if given)."""
        images = self.train_images if indices is None else self.train_images[indices]
        x = images.to(torch.float64) / 255.0
        return x.mean(dim=(0, 2, 3)).float(), x.std(dim=(0, 2, 3)).float()


# Per-channel mean and std of each dataset's full official training split, in [0, 1] units
# (the values the field uses).  Fixed constants: no statistic ever sees a test or held-out
# image, and every run and client of a dataset normalizes the same way.
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}


# ---------------------------------------------------------------- loading


def load_dataset(
    name: str,
    root: str | Path = "data",
    download: bool = True,
    synthetic: dict | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> ImageDataset:
    """Load dataset ``name`` on the CPU; ``max_train``/``max_test`` keep a fixed random subset."""
    root = Path(root)
    if name == "cifar10":
        ds = _load_cifar(root, download, hundred=False)
    elif name == "cifar100":
        ds = _load_cifar(root, download, hundred=True)
    elif name == "fashion-mnist":
        ds = _load_fashion_mnist(root, download)
    elif name == "synthetic":
        ds = make_synthetic(**(synthetic or {}))
    else:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return _subset(ds, max_train, max_test)


def _subset(ds: ImageDataset, max_train: int | None, max_test: int | None) -> ImageDataset:
    """A subset fixed by the dataset alone (seed 0), so every run of a study sees the same one."""
    g = torch.Generator().manual_seed(0)
    out = ds
    if max_train is not None and max_train < len(ds.train_labels):
        keep = torch.randperm(len(ds.train_labels), generator=g)[:max_train].sort().values
        out = replace(out, train_images=ds.train_images[keep], train_labels=ds.train_labels[keep])
    if max_test is not None and max_test < len(ds.test_labels):
        keep = torch.randperm(len(ds.test_labels), generator=g)[:max_test].sort().values
        out = replace(out, test_images=ds.test_images[keep], test_labels=ds.test_labels[keep])
    return out


def make_synthetic(
    num_classes: int = 10,
    channels: int = 3,
    size: int = 32,
    train_size: int = 2000,
    test_size: int = 500,
    noise: float = 0.35,
    seed: int = 0,
) -> ImageDataset:
    """Deterministic class-dependent images: a smooth random template per class plus noise.

    Learnable in a few steps by any backbone, yet not trivially separable at high noise.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        x = templates[labels] + noise * torch.randn(n, channels, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels

    tr_x, tr_y = draw(train_size)
    te_x, te_y = draw(test_size)
    return ImageDataset("synthetic", tr_x, tr_y, te_x, te_y, num_classes)


# CIFAR: torchvision's python format, downloaded with torchvision's checked downloader.
_CIFAR = {
    False: dict(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        label_key="labels",
        classes=10,
    ),
    True: dict(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=["train"],
        test=["test"],
        label_key="fine_labels",
        classes=100,
    ),
}


class _DatasetUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles of numpy arrays: allow exactly the globals they need."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _DatasetUnpickler(f, encoding="latin1").load()
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[label_key], dtype=np.int64)


def _load_cifar(root: Path, download: bool, hundred: bool) -> ImageDataset:
    meta = _CIFAR[hundred]
    name = "cifar100" if hundred else "cifar10"
    folder = root / meta["folder"]
    expected = [folder / f for f in meta["train"] + meta["test"]]
    if not all(p.exists() for p in expected):
        archive = root / meta["archive"]
        if not archive.exists() and download:
            try:
                from torchvision.datasets.utils import download_url

                download_url(meta["url"], str(root), meta["archive"], meta["md5"])
            except Exception as e:  # no network, proxy, checksum: all end the same way
                raise DatasetUnavailable(_missing_message(name, folder, expected, archive, f"download failed: {e}")) from e
        if not archive.exists():
            raise DatasetUnavailable(_missing_message(name, folder, expected, archive, "download disabled"))
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
        missing = [str(p) for p in expected if not p.exists()]
        if missing:
            raise DatasetUnavailable(f"{archive} does not contain the expected files: {', '.join(missing)}")

    def read(files: list[str]) -> tuple[Tensor, Tensor]:
        parts = [_read_cifar_batch(folder / f, meta["label_key"]) for f in files]
        return torch.from_numpy(np.concatenate([p[0] for p in parts])), torch.from_numpy(np.concatenate([p[1] for p in parts]))

    tr_x, tr_y = read(meta["train"])
    te_x, te_y = read(meta["test"])
    return ImageDataset(name, tr_x, tr_y, te_x, te_y, meta["classes"])


def _missing_message(name: str, folder: Path, expected: list[Path], archive: Path, why: str) -> str:
    files = ", ".join(p.name for p in expected)
    return (
        f"{name} is not available: expected {files} in {folder} (or the archive {archive}); {why}. "
        f"On a machine without internet, copy the files there or set dataset.root."
    )


_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def fashion_mnist_dirs(root: Path) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]


def _load_fashion_mnist(root: Path, download: bool) -> ImageDataset:
    dirs = fashion_mnist_dirs(root)
    found = None
    for directory in dirs:
        files = {k: _find_idx(directory, stem) for k, stem in _FMNIST_FILES.items()}
        if all(files.values()):
            found = files
            break
    if found is None and download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception as e:
            raise DatasetUnavailable(_fmnist_message(dirs, f"download failed: {e}")) from e
        found = {k: _find_idx(dirs[1], stem) for k, stem in _FMNIST_FILES.items()}
    if found is None or not all(found.values()):
        raise DatasetUnavailable(_fmnist_message(dirs, "download disabled"))
    tr_x = read_idx(found["train_images"]).unsqueeze(1)
    te_x = read_idx(found["test_images"]).unsqueeze(1)
    return ImageDataset(
        "fashion-mnist", tr_x, read_idx(found["train_labels"]).long(), te_x, read_idx(found["test_labels"]).long(), 10
    )


def _fmnist_message(dirs: list[Path], why: str) -> str:
    where = ", ".join(str(d) for d in dirs)
    files = ", ".join(f"{s}[.gz]" for s in _FMNIST_FILES.values())
    return (
        f"fashion-mnist is not available: expected {files} in one of {where}; {why}. "
        f"On Debian: apt-get install dataset-fashion-mnist."
    )


def read_idx(path: Path) -> Tensor:
    """Read an IDX file (the MNIST format), gzipped or not, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned byte data
        raise ValueError(f"{path} is not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {len(raw) - offset} bytes")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy())


# ---------------------------------------------------------------- on-device batches


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


def gather_augmented(padded: Tensor, idx: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Gather a batch from a dataset padded once up front, random-cropped and flipped, in one
    indexing operation (what ``random_flip(random_crop(images[idx]))`` computes, with the same
    random draws, at a fraction of the memory traffic). Returns a channels_last-strided batch."""
    b, dev = len(idx), padded.device
    h, w = padded.shape[-2] - 2 * padding, padded.shape[-1] - 2 * padding
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding > 0:
        rows = rows + torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
        cols = cols + torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    return padded[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


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
            aug = self.augmentation
            if aug is None:
                x = self.images[idx]
            else:
                source = self.padded if aug.crop_padding > 0 else self.images
                x = gather_augmented(source, idx, aug.crop_padding, aug.flip, self.generator)
            yield self.normalize(x), self.labels[idx]


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
