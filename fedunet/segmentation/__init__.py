"""Semantic segmentation: composite Fashion-MNIST canvases, real-dataset loaders, mIoU, and the
pieces that run it in the federated engine.

How the engine runs segmentation
================================
A run config whose ``dataset.name`` is a segmentation dataset (:mod:`~fedunet.segmentation.runconfig`:
``fmnist-composite``, ``synthetic-composite``, ``oxford-pet``, ``voc``) is a segmentation run; the
engine (``fedunet/federated.py``, ``fedunet/population.py``, ``fedunet/client.py``) branches on it in
four places, each a function here:

* **Config** (:mod:`~fedunet.segmentation.runconfig`): defaults that follow the task (segmentation
  backbones, ``dataset.composite`` / ``dataset.segmentation``) and the refusals: methods that exchange
  class-level vectors (FD logits, FedProto/FedGH/FedTGP prototypes, LG-FedAvg's head) have no
  per-pixel version, so only ``fedunet``, ``fedunet-unet``, ``local`` and ``fedavg`` are allowed; the
  fusion is the decoder's, per pixel; no pooled (``htfl``) partition; composites take their global
  test set from ``dataset.composite.test_canvases`` (not ``dataset.max_test``).
* **Data** (:mod:`~fedunet.segmentation.run`): :func:`federated_composites` partitions the source
  images *before* compositing (label skew over the classes on each client's canvases) and the
  partition comes with the dataset; masks stand in for labels (``SegmentationDataset.train_labels``),
  class counts are pixels (:func:`class_pixel_counts`), normalization comes from the clients' training
  canvases (no published constants fit them), and ``fedunet.batches.MaskLoader`` crops and flips each
  mask with its canvas (padding with :data:`IGNORE_INDEX`, never background) and makes it int64.
* **Model and loss**: ``fedunet.segmodel.SegClientModel`` from a ``SegSpec`` per client; its
  submodule names follow ``ClientModel``'s (``unet.bottleneck.`` is what FedUNet shares, the same
  tensors and bytes as in classification for the same ``d``). ``client.cross_entropy`` is per pixel
  for masks, over the pixels not marked :data:`IGNORE_INDEX`
  (:func:`~fedunet.segmentation.evaluation.pixel_loss`).
* **Metrics, both protocols** (:mod:`~fedunet.segmentation.evaluation`): confusion matrices on the
  device, one host transfer per evaluation; personalized mIoU and pixel accuracy of the matrix summed
  over clients, global ones per client averaged over clients, ``val_miou`` for the best round, the
  per-pixel path diagnostics. A finished run leaves ``examples.npz`` (numpy arrays) for the figures.

Bytes per round are unchanged: the U-Net bottleneck depends only on ``d`` (``DoubleConv(d/2 -> d)``),
whatever the canvas size or the number of classes. Tables name the dataset ``fmnist-composite`` and
label it as composites (made by :mod:`fedunet.segmentation.composites`, not a published benchmark).

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
