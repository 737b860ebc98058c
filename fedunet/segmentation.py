"""Semantic segmentation building blocks: composite Fashion-MNIST canvases, real-dataset loaders, mIoU.

Standalone and tested; not yet wired into the federated engine.

Design note: what the engine needs to run segmentation
======================================================
(``fedunet/federated.py``, ``fedunet/client.py``, ``fedunet/metrics.py``, ``fedunet/setup.py``;
the pieces here and in ``fedunet/segmodel.py`` are built to slot into them.)

* **Data.** :func:`federated_composites` returns a :class:`SegmentationDataset` (uint8 images
  ``(N, C, S, S)``, uint8 masks ``(N, S, S)``) and a :class:`fedunet.partition.Partition` whose
  per-client ``train``/``test`` indices point into the canvas arrays, so ``ClientLoader(images,
  masks, indices, ...)`` and ``eval_batches`` work unchanged with masks in the place of labels
  (``labels[idx]`` gathers masks). Masks must become ``int64`` per batch (``.long()``) for the loss.
  ``setup.load_run_dataset``/``partition_for`` need a branch for task ``segmentation``: the
  partition is made *before* compositing (it is of the source images) and comes with the dataset.
  ``Partition.class_counts`` counts per-sample labels; for canvases use :func:`class_pixel_counts`.
  The global test set is ``test_images``/``test_masks`` (composites of the official test split, every
  class present). Normalization: Fashion-MNIST's constants are wrong for canvases (mostly background);
  use the clients' training canvases (``dataset.normalization: clients``) or new constants.
* **Augmentation** must move image and mask together: ``gather_augmented`` computes crop rows/cols
  and flips for images only. The engine needs the same index arithmetic applied to the mask batch
  (pad masks with :data:`IGNORE_INDEX`, not background, so padding never counts as class 0), or
  no augmentation for segmentation (the canvases are already random placements).
* **Model.** ``fedunet.segmodel.SegClientModel`` replaces ``ClientModel`` (built from
  ``SegSpec``); its submodule names follow the same protocol (``unet.bottleneck.`` is what FedUNet
  shares), so ``fedunet``, ``fedunet-unet``, ``local`` and ``fedavg`` run unchanged. Methods that
  exchange class-level vectors (FD logits, FedProto/FedGH/FedTGP prototypes, LG-FedAvg's head) need
  per-pixel versions (prototypes averaged over pixels of a class, a 1x1-conv head); leave them out
  until written. ``fusion.norms``/``ablate`` diagnostics do not exist on the per-pixel fusion.
* **Loss.** ``client.cross_entropy`` works as is on ``(B, K, H, W)`` logits and ``(B, H, W)``
  targets, with ``ignore_index=IGNORE_INDEX`` (the real datasets' borders): a segmentation loss
  function ``F.cross_entropy(logits, y.long(), ignore_index=255)`` per method.
* **Metrics, both protocols.** ``metrics.evaluate`` counts ``argmax(1) == y`` per sample; a
  segmentation version accumulates a :class:`ConfusionMatrix` on the device (no per-sample Python,
  one host sync per evaluation) and returns the matrix. *Personalized*: each client on its own
  held-out canvases; report the mIoU of the matrix summed over clients (pixel-weighted, the analogue of
  sample-weighted accuracy) and the mean/std of per-client mIoU. *Global*: each client model on the
  global test canvases, mIoU per client, averaged over clients (and per architecture). Pixel
  accuracy alongside both. Columns: ``pers_miou``, ``pers_pixel_acc``, ``global_miou``,
  ``global_pixel_acc`` (and ``val_miou`` for the validation best round); ``summarize_round`` and
  the study tables key on ``*_acc`` today and need the task's primary metric as a parameter.
  Classes absent from both prediction and ground truth of a matrix are excluded from its mean
  (:func:`iou_per_class` returns NaN for them), so a client whose canvases never show a class is
  not penalized for it in the personalized protocol.
* **Bytes per round** are unchanged: the U-Net bottleneck depends only on ``d``
  (``DoubleConv(d/2 -> d)``), whatever the canvas size or the number of classes.
* **Tables.** Name the dataset ``fmnist-composite`` in every table (not Fashion-MNIST): they are
  composites made by this module, not a published segmentation benchmark.

Composites
==========
Each canvas (``canvas_size`` square, 64 by default) receives a random number of garments (between
``garments[0]`` and ``garments[1]``), each a real 28x28 Fashion-MNIST image pasted at a random
position (``placement="random"``) or in distinct cells of a grid with jitter (``placement="grid"``,
no overlap). Only a garment's own pixels (value > ``threshold``) are pasted; the mask takes the
garment's class + 1 there; everything else is background (class 0). Where garments overlap,
``overlap="over"`` puts the later garment on top, ``"under"`` keeps the earlier one. The same
(seed, options, source images) always gives bit-identical tensors (CPU generators, fixed draw order).

Label skew for non-IID clients: :func:`federated_composites` partitions the *source images* with the
library's Dirichlet partition (``fedunet.partition.make_partition``) and builds each client's canvases
only from its own share, so the classes that appear on a client's canvases follow its Dirichlet draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedunet.data import DatasetUnavailable, load_dataset
from fedunet.partition import Partition, make_partition

SEGMENTATION_DATASETS = ("fmnist-composite", "oxford-pet", "voc")
COMPOSITE_NAME = "fmnist-composite"
BACKGROUND = 0
IGNORE_INDEX = 255  # pixels no loss or metric counts (object borders in the real datasets)
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
PLACEMENTS = ("random", "grid")
OVERLAPS = ("over", "under")


@dataclass
class SegmentationDataset:
    """Train and test splits as uint8 images ``(N, C, S, S)`` and uint8 class masks ``(N, S, S)``."""

    name: str
    train_images: Tensor
    train_masks: Tensor
    test_images: Tensor
    test_masks: Tensor
    num_classes: int  # background included
    class_names: tuple[str, ...]
    settings: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_images.shape[-1]

    def to(self, device: torch.device | str) -> SegmentationDataset:
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_masks=self.train_masks.to(device),
            test_images=self.test_images.to(device),
            test_masks=self.test_masks.to(device),
        )

    def content_hash(self) -> str:
        """SHA-256 of every tensor's bytes (what "bit-identical" is checked against)."""
        h = hashlib.sha256()
        for t in (self.train_images, self.train_masks, self.test_images, self.test_masks):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


# ---------------------------------------------------------------- composites


@dataclass(frozen=True)
class CompositeOptions:
    canvas_size: int = 64
    garments: tuple[int, int] = (2, 4)  # per canvas, inclusive range
    placement: str = "random"  # "random" (overlap possible) or "grid" (distinct cells, no overlap)
    overlap: str = "over"  # "over": a later garment covers an earlier one; "under": the earlier stays on top
    threshold: int = 20  # a garment pixel is foreground where its value (0..255) exceeds this

    def check(self, source_size: int) -> None:
        lo, hi = self.garments
        problems = []
        if self.placement not in PLACEMENTS:
            problems.append(f"placement: {self.placement!r} is not allowed; allowed: {', '.join(PLACEMENTS)}")
        if self.overlap not in OVERLAPS:
            problems.append(f"overlap: {self.overlap!r} is not allowed; allowed: {', '.join(OVERLAPS)}")
        if not 1 <= lo <= hi:
            problems.append(f"garments: need 1 <= min <= max, got {self.garments}")
        if self.canvas_size < source_size:
            problems.append(f"canvas_size {self.canvas_size} is smaller than a source image ({source_size})")
        elif self.placement == "grid" and hi > (self.canvas_size // source_size) ** 2:
            cells = (self.canvas_size // source_size) ** 2
            size = self.canvas_size
            problems.append(f"garments: at most {cells} fit a {size}x{size} grid of {source_size}px cells")
        if not 0 <= self.threshold < 255:
            problems.append(f"threshold must be in [0, 255), got {self.threshold}")
        if problems:
            raise ValueError("composite options: " + "; ".join(problems))


def _seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def composite(
    images: Tensor,
    labels: Tensor,
    num_canvases: int,
    options: CompositeOptions | None = None,
    pool: Tensor | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Paste source images (``(N, 1, s, s)`` uint8) onto ``num_canvases`` canvases.

    Garments are drawn uniformly with replacement from ``pool`` (indices into ``images``; all if
    None). Returns canvases ``(M, 1, S, S)`` uint8, masks ``(M, S, S)`` uint8 (0 background,
    ``label + 1`` garment) and the source index of every garment slot ``(M, max garments)``, -1
    where a canvas has fewer garments. Vectorized over canvases; the only loop is over slots.
    """
    options = options or CompositeOptions()
    if images.dim() != 4 or images.shape[1] != 1 or images.dtype != torch.uint8:
        raise ValueError(f"composite: expected uint8 images (N, 1, s, s), got {tuple(images.shape)} {images.dtype}")
    s = images.shape[-1]
    options.check(s)
    S, (lo, hi), M = options.canvas_size, options.garments, num_canvases
    images, labels = images.cpu(), labels.cpu()
    pool = torch.arange(len(images)) if pool is None else pool.cpu().long()
    if len(pool) == 0:
        raise ValueError("composite: the pool of source images is empty")
    g = torch.Generator().manual_seed(seed)
    # every draw, in a fixed order: counts, sources, positions
    counts = torch.randint(lo, hi + 1, (M,), generator=g)
    sources = pool[torch.randint(len(pool), (M, hi), generator=g)]
    sources = torch.where(torch.arange(hi) < counts[:, None], sources, torch.full_like(sources, -1))
    if options.placement == "random":
        ys = torch.randint(0, S - s + 1, (M, hi), generator=g)
        xs = torch.randint(0, S - s + 1, (M, hi), generator=g)
    else:
        cells_per_side, cell = S // s, S // (S // s)
        cells = torch.rand(M, cells_per_side**2, generator=g).argsort(dim=1)[:, :hi]  # distinct cells
        jy = torch.randint(0, cell - s + 1, (M, hi), generator=g)
        jx = torch.randint(0, cell - s + 1, (M, hi), generator=g)
        ys, xs = (cells // cells_per_side) * cell + jy, (cells % cells_per_side) * cell + jx
    canvas = torch.zeros(M, S * S, dtype=torch.uint8)
    mask = torch.zeros(M, S * S, dtype=torch.uint8)
    offsets = (torch.arange(s)[:, None] * S + torch.arange(s)[None, :]).flatten()  # (s*s,)
    for j in range(hi):
        active = sources[:, j] >= 0
        src = sources[:, j].clamp(min=0)
        garment = images[src].view(M, s * s)
        fg = (garment > options.threshold) & active[:, None]
        where = (ys[:, j] * S + xs[:, j])[:, None] + offsets  # (M, s*s) flat canvas positions, distinct per row
        if options.overlap == "under":
            fg &= mask.gather(1, where) == BACKGROUND
        canvas.scatter_(1, where, torch.where(fg, garment, canvas.gather(1, where)))
        cls = (labels[src] + 1).to(torch.uint8)[:, None].expand(M, s * s)
        mask.scatter_(1, where, torch.where(fg, cls, mask.gather(1, where)))
    return canvas.view(M, 1, S, S), mask.view(M, S, S), sources


def make_fmnist_composites(
    root: str | Path = "data",
    download: bool = False,
    train_canvases: int = 6000,
    test_canvases: int = 1000,
    options: CompositeOptions | None = None,
    seed: int = 0,
    source: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> SegmentationDataset:
    """``fmnist-composite``: canvases from the official Fashion-MNIST training split (train) and
    test split (test), so no test garment is ever seen in training. ``source`` = (train images,
    train labels, test images, test labels) replaces the Fashion-MNIST files (tests)."""
    options = options or CompositeOptions()
    if source is None:
        ds = load_dataset("fashion-mnist", root, download)
        source = (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)
    tr_x, tr_y, te_x, te_y = source
    train_c, train_m, _ = composite(tr_x, tr_y, train_canvases, options, seed=_seed(seed, "composite", "train"))
    test_c, test_m, _ = composite(te_x, te_y, test_canvases, options, seed=_seed(seed, "composite", "test"))
    return SegmentationDataset(
        COMPOSITE_NAME,
        train_c,
        train_m,
        test_c,
        test_m,
        num_classes=11,
        class_names=("background",) + FMNIST_CLASSES,
        settings=dict(_settings(options), seed=seed, train_canvases=train_canvases, test_canvases=test_canvases),
    )


def _settings(options: CompositeOptions) -> dict:
    out = asdict(options)
    out["garments"] = list(options.garments)
    return out


def federated_composites(
    num_clients: int,
    alpha: float | None = 0.5,
    root: str | Path = "data",
    download: bool = False,
    options: CompositeOptions | None = None,
    uses_per_image: float = 1.0,
    test_fraction: float = 0.25,
    min_samples: int = 50,
    global_test_canvases: int = 1000,
    max_source_train: int | None = None,
    seed: int = 0,
    source: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> tuple[SegmentationDataset, Partition]:
    """Per-client canvases with label skew over which classes appear on them.

    The source training images are partitioned over clients by the library's Dirichlet scheme
    (``alpha``; ``None``: IID) with a held-out share per client (``test_fraction``); each client's
    training canvases are composited only from its training share, its held-out canvases only from
    its held-out share. A client gets ``round(uses_per_image * images / mean garments per canvas)``
    canvases of each (at least one), so on average each of its images is pasted ``uses_per_image``
    times. Returns the dataset (train = every client's canvases concatenated, test = the global test
    canvases from the official test split) and a :class:`Partition` whose indices point into the
    canvases; its ``settings`` include the source partition's and its content hash.
    ``max_source_train`` keeps a fixed subset of the source training split (``data.load_dataset``'s).
    """
    options = options or CompositeOptions()
    if source is None:
        ds = load_dataset("fashion-mnist", root, download, max_train=max_source_train)
        source = (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)
    tr_x, tr_y, te_x, te_y = source
    options.check(tr_x.shape[-1])
    scheme = "iid" if alpha is None else "dirichlet"
    src = make_partition(tr_y, num_clients, scheme, alpha if alpha is not None else 0.5, min_samples, test_fraction, seed)
    mean_garments = (options.garments[0] + options.garments[1]) / 2
    images, masks, train_idx, test_idx, start = [], [], [], [], 0
    for i in range(num_clients):
        for split, pool, out in (("train", src.train[i], train_idx), ("test", src.test[i], test_idx)):
            n = max(1, round(uses_per_image * len(pool) / mean_garments)) if len(pool) else 0
            if n:
                c, m, _ = composite(tr_x, tr_y, n, options, pool=pool, seed=_seed(seed, "composite", "client", i, split))
                images.append(c)
                masks.append(m)
            out.append(torch.arange(start, start + n))
            start += n
    test_c, test_m, _ = composite(te_x, te_y, global_test_canvases, options, seed=_seed(seed, "composite", "test"))
    settings = dict(
        _settings(options),
        seed=seed,
        num_clients=num_clients,
        alpha=alpha,
        uses_per_image=uses_per_image,
        test_fraction=test_fraction,
        min_samples=min_samples,
        global_test_canvases=global_test_canvases,
        source_partition=src.settings,
        source_partition_sha256=src.content_hash(),
    )
    ds = SegmentationDataset(
        COMPOSITE_NAME,
        torch.cat(images),
        torch.cat(masks),
        test_c,
        test_m,
        num_classes=11,
        class_names=("background",) + FMNIST_CLASSES,
        settings=settings,
    )
    return ds, Partition(train_idx, test_idx, ds.num_classes, settings)


def class_pixel_counts(masks: Tensor, partition: Partition, num_classes: int) -> np.ndarray:
    """(clients x classes) pixels of each class on each client's canvases (train + held-out);
    :data:`IGNORE_INDEX` pixels are not counted."""
    counts = np.zeros((partition.num_clients, num_classes), dtype=np.int64)
    for i, (tr, te) in enumerate(zip(partition.train, partition.test)):
        m = masks[torch.cat([tr, te]).to(masks.device)].long().flatten()
        counts[i] = torch.bincount(m[m < num_classes], minlength=num_classes).cpu().numpy()
    return counts


# ---------------------------------------------------------------- metrics


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = ground truth, columns = prediction.

    Computed on the tensors' device with one ``bincount`` (no host sync): pixels whose target is
    ``ignore_index`` (or outside ``0..num_classes-1``) go to an extra bin that is dropped.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    flat = torch.where(valid, target * num_classes + pred, torch.full_like(target, num_classes * num_classes))
    counts = torch.bincount(flat, minlength=num_classes * num_classes + 1)
    return counts[: num_classes * num_classes].view(num_classes, num_classes)


class ConfusionMatrix:
    """A confusion matrix accumulated on the device over batches: ``update(logits, masks)``."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, scores_or_pred: Tensor, target: Tensor) -> None:
        """``scores_or_pred``: logits ``(B, K, H, W)`` (argmax over K) or predictions ``(B, H, W)``."""
        pred = scores_or_pred.argmax(1) if scores_or_pred.dim() == target.dim() + 1 else scores_or_pred
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def scores(self) -> dict:
        return segmentation_scores(self.matrix)


def iou_per_class(matrix: Tensor) -> Tensor:
    """IoU_c = TP / (TP + FP + FN) per class, float64; NaN for a class absent from both the
    prediction and the ground truth (TP + FP + FN = 0), which :func:`mean_iou` leaves out. A class
    present in the ground truth but never predicted scores 0, and so does a class predicted but
    absent from the ground truth (its FP pixels count): both stay in the mean."""
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(matrix: Tensor) -> Tensor:
    """Mean IoU over the classes present in the prediction or the ground truth (a 0-d tensor)."""
    return iou_per_class(matrix).nanmean()


def pixel_accuracy(matrix: Tensor) -> Tensor:
    """Correct pixels / counted pixels (ignored pixels are not in the matrix)."""
    m = matrix.double()
    return m.diagonal().sum() / m.sum().clamp(min=1)


def segmentation_scores(matrix: Tensor) -> dict:
    """Python numbers from a confusion matrix (one host sync): ``miou``, ``pixel_acc``, per-class
    ``iou`` (NaN: absent), ``pixels``."""
    iou = iou_per_class(matrix)
    values = torch.cat([iou.nanmean().view(1), pixel_accuracy(matrix).view(1), iou]).cpu().tolist()
    return {"miou": values[0], "pixel_acc": values[1], "iou": values[2:], "pixels": int(matrix.sum())}


# ---------------------------------------------------------------- real datasets (torchvision layouts)


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


def load_segmentation_dataset(name: str, root: str | Path = "data", download: bool = False, **options) -> SegmentationDataset:
    """A segmentation dataset by name: ``fmnist-composite`` (options: ``CompositeOptions`` fields,
    ``train_canvases``, ``test_canvases``, ``seed``), ``oxford-pet`` or ``voc``."""
    if name == COMPOSITE_NAME:
        fields = set(CompositeOptions.__dataclass_fields__)
        opts = CompositeOptions(**{k: tuple(v) if k == "garments" else v for k, v in options.items() if k in fields})
        rest = {k: v for k, v in options.items() if k not in fields}
        return make_fmnist_composites(root, download, options=opts, **rest)
    if name == "oxford-pet":
        return load_oxford_pet(root, download=download, **options)
    if name == "voc":
        return load_voc_segmentation(root, download=download, **options)
    raise ValueError(f"unknown segmentation dataset {name!r}; allowed: {', '.join(SEGMENTATION_DATASETS)}")


def classes_on(masks: Tensor, num_classes: int) -> list[int]:
    """The classes (background excluded) that appear on a set of masks."""
    m = masks.long().flatten()
    present = torch.bincount(m[m < num_classes], minlength=num_classes) > 0
    return [c for c in range(1, num_classes) if bool(present[c])]
