"""Semantic segmentation building blocks: composite Fashion-MNIST canvases, real-dataset loaders, mIoU.

Standalone and tested; not yet wired into the federated engine.

Design note: what the engine needs to run segmentation
======================================================
(``fedunet/federated.py``, ``fedunet/client.py``, ``fedunet/metrics.py``, ``fedunet/population.py``;
the pieces here and in ``fedunet/segmodel.py`` are built to slot into them.)

* **Data.** :func:`federated_composites` returns a :class:`SegmentationDataset` (uint8 images
  ``(N, C, S, S)``, uint8 masks ``(N, S, S)``) and a :class:`fedunet.partition.Partition` whose
  per-client ``train``/``test`` indices point into the canvas arrays, so ``ClientLoader(images,
  masks, indices, ...)`` and ``eval_batches`` work unchanged with masks in the place of labels
  (``labels[idx]`` gathers masks). Masks must become ``int64`` per batch (``.long()``) for the loss.
  ``population.load_run_dataset``/``partition_for`` need a branch for task ``segmentation``: the
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
  composites made by :mod:`fedunet.segmentation.composites`, not a published segmentation benchmark.

The pieces, one module each: :mod:`~fedunet.segmentation.dataset` (the dataset and its masks),
:mod:`~fedunet.segmentation.composites` (``fmnist-composite``), :mod:`~fedunet.segmentation.pet_voc`
(Oxford-IIIT Pet, PASCAL VOC) and :mod:`~fedunet.segmentation.metrics` (confusion matrix, mIoU, pixel
accuracy); every public name is importable from ``fedunet.segmentation`` itself.
"""

from __future__ import annotations

from pathlib import Path

from fedunet.segmentation.composites import (
    COMPOSITE_NAME,
    FMNIST_CLASSES,
    OVERLAPS,
    PLACEMENTS,
    CompositeOptions,
    composite,
    federated_composites,
    make_fmnist_composites,
)
from fedunet.segmentation.dataset import (
    BACKGROUND,
    IGNORE_INDEX,
    SegmentationDataset,
    class_pixel_counts,
    classes_on,
)
from fedunet.segmentation.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    segmentation_scores,
)
from fedunet.segmentation.pet_voc import (
    PET,
    PET_BORDERS,
    PET_CLASSES,
    VOC,
    VOC_CLASSES,
    load_oxford_pet,
    load_voc_segmentation,
)

SEGMENTATION_DATASETS = ("fmnist-composite", "oxford-pet", "voc")

__all__ = [
    "BACKGROUND",
    "COMPOSITE_NAME",
    "FMNIST_CLASSES",
    "IGNORE_INDEX",
    "OVERLAPS",
    "PET",
    "PET_BORDERS",
    "PET_CLASSES",
    "PLACEMENTS",
    "SEGMENTATION_DATASETS",
    "VOC",
    "VOC_CLASSES",
    "CompositeOptions",
    "ConfusionMatrix",
    "SegmentationDataset",
    "class_pixel_counts",
    "classes_on",
    "composite",
    "confusion_matrix",
    "federated_composites",
    "iou_per_class",
    "load_oxford_pet",
    "load_segmentation_dataset",
    "load_voc_segmentation",
    "make_fmnist_composites",
    "mean_iou",
    "pixel_accuracy",
    "segmentation_scores",
]


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
