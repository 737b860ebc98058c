"""Segmentation metrics from a confusion matrix accumulated on the device: per-class IoU, mIoU,
pixel accuracy."""

from __future__ import annotations

import torch
from torch import Tensor

from fedunet.segmentation.dataset import IGNORE_INDEX


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = ground truth, columns = prediction.

    Computed on the tensors' device without a host sync, as the product of the one-hot ground truth
    and the one-hot prediction (float64: exact counts; deterministic): ``torch.bincount`` would read
    the input's min and max on the host on CUDA, and an accumulating ``index_put_`` checks its
    indices there.  Pixels whose target is ``ignore_index`` (or outside ``0..num_classes-1``) go to
    an extra ground-truth class that is dropped.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    classes = torch.arange(num_classes, device=target.device)
    truth = (target[:, None] == classes) & valid[:, None]  # (pixels, classes), as comparisons: no range check
    predicted = pred[:, None] == classes
    return (truth.t().double() @ predicted.double()).round().long()


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
