"""Datasets by name, loaded once as uint8 tensors: CIFAR-10/100, Fashion-MNIST, synthetic.

Datasets are chosen by name (``cifar10``, ``cifar100``, ``fashion-mnist``, ``synthetic``)
and loaded once into ``uint8`` tensors ``(N, C, H, W)`` with ``int64`` labels, on the CPU; the
engine moves them to the training device, where :mod:`fedunet.batches` gathers, augments and
normalizes the batches.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# The on-device batches lived here: the engine (client, metrics, population) and the benchmarks import them from here.
from fedunet.batches import (  # noqa: F401
    Augmentation,
    ClientLoader,
    Normalizer,
    eval_batches,
    gather_augmented,
    pad_images,
    random_crop,
    random_flip,
)

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "synthetic")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing and could not be downloaded."""


_Splits = TypeVar("_Splits", bound="ImageSplits")


class ImageSplits:
    """What every dataset held as train and test tensors shares (a mixin for dataclasses with
    ``train_images`` ``(N, C, H, W)``): its image geometry and a copy on another device.
    ``TENSORS`` names the tensor fields, in the order they are moved."""

    TENSORS: tuple[str, ...] = ()

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_images.shape[-1]

    def to(self: _Splits, device: torch.device | str) -> _Splits:
        return replace(self, **{name: getattr(self, name).to(device) for name in self.TENSORS})

    def channel_stats(self, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std in [0, 1] units of the training images (only ``indices`` if given)."""
        images = self.train_images if indices is None else self.train_images[indices]
        x = images.to(torch.float64) / 255.0
        return x.mean(dim=(0, 2, 3)).float(), x.std(dim=(0, 2, 3)).float()


@dataclass
class ImageDataset(ImageSplits):
    """Train and test splits as uint8 image tensors and int64 labels."""

    TENSORS = ("train_images", "train_labels", "test_images", "test_labels")

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int


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
