"""``fmnist-composite``: Fashion-MNIST garments pasted onto larger canvases, with class masks.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from fedunet.data import load_dataset
from fedunet.partition import Partition, make_partition
from fedunet.segmentation.dataset import BACKGROUND, SegmentationDataset

COMPOSITE_NAME = "fmnist-composite"
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
CLASS_NAMES = ("background",) + FMNIST_CLASSES  # mask value = class index (a garment's label + 1)
PLACEMENTS = ("random", "grid")
OVERLAPS = ("over", "under")


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
    settings = dict(_settings(options), seed=seed, train_canvases=train_canvases, test_canvases=test_canvases)
    return _composite_dataset(train_c, train_m, test_c, test_m, settings)


def _composite_dataset(train_c: Tensor, train_m: Tensor, test_c: Tensor, test_m: Tensor, settings: dict) -> SegmentationDataset:
    """Canvases and masks as ``fmnist-composite``: background and the ten garment classes."""
    return SegmentationDataset(COMPOSITE_NAME, train_c, train_m, test_c, test_m, len(CLASS_NAMES), CLASS_NAMES, settings)


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
    ds = _composite_dataset(torch.cat(images), torch.cat(masks), test_c, test_m, settings)
    return ds, Partition(train_idx, test_idx, ds.num_classes, settings)
