"""Real segmentation datasets in torchvision's layouts: Oxford-IIIT Pet and PASCAL VOC 2012, resized
and loaded once as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedunet.data import DatasetUnavailable
from fedunet.segmentation.dataset import BACKGROUND, IGNORE_INDEX, SegmentationDataset


@dataclass(frozen=True)
class _Layout:
    name: str
    folder: str  # below root
    expected: tuple[str, ...]  # below folder
    source: str  # where to get it


PET = _Layout(
    "oxford-pet",
    "oxford-iiit-pet",
    ("images/<name>.jpg", "annotations/trimaps/<name>.png", "annotations/trainval.txt", "annotations/test.txt"),
    "the archives images.tar.gz and annotations.tar.gz of https://www.robots.ox.ac.uk/~vgg/data/pets/ unpacked there",
)
VOC = _Layout(
    "voc",
    "VOCdevkit/VOC2012",
    (
        "JPEGImages/<name>.jpg",
        "SegmentationClass/<name>.png",
        "ImageSets/Segmentation/train.txt",
        "ImageSets/Segmentation/val.txt",
    ),
    "VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) unpacked into the root",
)


def _missing_message(layout: _Layout, root: Path, missing: list[str], why: str) -> str:
    folder = root / layout.folder
    return (
        f"{layout.name} is not available: expected {', '.join(layout.expected)} in {folder} "
        f"(torchvision's layout); missing: {', '.join(missing)}; {why}. "
        f"Get {layout.source}, or pass download=True on a machine with internet, or set the root."
    )


def _check_layout(layout: _Layout, root: Path) -> list[str]:
    """The expected paths that are missing (split files and the two folders)."""
    folder = root / layout.folder
    missing = []
    for rel in layout.expected:
        path = folder / rel.split("/<name>")[0] if "<name>" in rel else folder / rel
        if not path.exists():
            missing.append(str(path))
    return missing


def _ensure(layout: _Layout, root: Path, download: bool, fetch) -> None:
    missing = _check_layout(layout, root)
    if not missing:
        return
    if not download:
        raise DatasetUnavailable(_missing_message(layout, root, missing, "download disabled"))
    try:
        fetch()
    except Exception as e:  # no network, proxy, checksum: all end the same way
        raise DatasetUnavailable(_missing_message(layout, root, missing, f"download failed: {e}")) from e
    missing = _check_layout(layout, root)
    if missing:
        raise DatasetUnavailable(_missing_message(layout, root, missing, "the download did not provide them"))


def _to_tensors(dataset, size: int, limit: int | None, convert_mask) -> tuple[Tensor, Tensor]:
    """Every (PIL image, PIL mask) pair resized to ``size`` x ``size`` (bilinear / nearest), loaded once."""
    from PIL import Image

    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        image, target = dataset[i]
        mask, extra = (target[0], target[1:]) if isinstance(target, tuple) else (target, ())
        images[i] = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        masks[i] = convert_mask(np.asarray(mask.resize((size, size), Image.NEAREST)), *extra)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


PET_BORDERS = ("ignore", "pet", "background")
PET_CLASSES = ("pet", "species")


def load_oxford_pet(
    root: str | Path = "data",
    size: int = 64,
    download: bool = False,
    classes: str = "pet",
    border: str = "ignore",
    max_train: int | None = None,
    max_test: int | None = None,
) -> SegmentationDataset:
    """Oxford-IIIT Pet segmentation (torchvision's ``OxfordIIITPet``, ``target_types='segmentation'``),
    ``trainval`` for training and ``test`` for testing, resized to ``size`` x ``size`` (aspect not kept).

    Trimaps (1 pet, 2 background, 3 border) become class 0 background and 1 pet (``classes="pet"``),
    or 1 cat and 2 dog (``classes="species"``); border pixels are :data:`IGNORE_INDEX`
    (``border="ignore"``) or counted as ``"pet"`` / ``"background"``.
    """
    from torchvision.datasets import OxfordIIITPet

    if classes not in PET_CLASSES:
        raise ValueError(f"classes: {classes!r} is not allowed; allowed: {', '.join(PET_CLASSES)}")
    if border not in PET_BORDERS:
        raise ValueError(f"border: {border!r} is not allowed; allowed: {', '.join(PET_BORDERS)}")
    root = Path(root)
    _ensure(PET, root, download, lambda: OxfordIIITPet(str(root), split="trainval", download=True))
    targets = ["segmentation"] + (["binary-category"] if classes == "species" else [])
    border_value = {"ignore": IGNORE_INDEX, "pet": 1, "background": BACKGROUND}[border]

    def convert(trimap: np.ndarray, species: int = 0) -> np.ndarray:
        pet = 1 + species if classes == "species" else 1  # binary-category: 0 cat, 1 dog
        out = np.full(trimap.shape, BACKGROUND, dtype=np.uint8)
        out[trimap == 1] = pet
        out[trimap == 3] = pet if border == "pet" else border_value
        return out

    tr = OxfordIIITPet(str(root), split="trainval", target_types=targets)
    te = OxfordIIITPet(str(root), split="test", target_types=targets)
    tr_x, tr_m = _to_tensors(tr, size, max_train, convert)
    te_x, te_m = _to_tensors(te, size, max_test, convert)
    names = ("background", "pet") if classes == "pet" else ("background", "cat", "dog")
    settings = dict(size=size, classes=classes, border=border, max_train=max_train, max_test=max_test)
    return SegmentationDataset("oxford-pet", tr_x, tr_m, te_x, te_m, len(names), names, settings)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def load_voc_segmentation(
    root: str | Path = "data",
    size: int = 64,
    download: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
) -> SegmentationDataset:
    """PASCAL VOC 2012 segmentation (torchvision's ``VOCSegmentation``): ``train`` for training,
    ``val`` for testing, 21 classes, object borders (255) ignored, resized to ``size`` x ``size``."""
    from torchvision.datasets import VOCSegmentation

    root = Path(root)
    _ensure(VOC, root, download, lambda: VOCSegmentation(str(root), year="2012", image_set="train", download=True))

    def convert(mask: np.ndarray) -> np.ndarray:
        return mask.astype(np.uint8)  # palette indices: 0..20 classes, 255 borders (= IGNORE_INDEX)

    tr = VOCSegmentation(str(root), year="2012", image_set="train")
    te = VOCSegmentation(str(root), year="2012", image_set="val")
    tr_x, tr_m = _to_tensors(tr, size, max_train, convert)
    te_x, te_m = _to_tensors(te, size, max_test, convert)
    settings = dict(size=size, max_train=max_train, max_test=max_test)
    return SegmentationDataset("voc", tr_x, tr_m, te_x, te_m, len(VOC_CLASSES), VOC_CLASSES, settings)
