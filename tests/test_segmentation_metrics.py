"""Segmentation metrics (fedunet/segmentation/metrics.py): confusion matrix, IoU, mIoU, pixel accuracy."""

import math

import numpy as np
import pytest
import torch

from fedunet.segmentation import metrics
from fedunet.segmentation.dataset import IGNORE_INDEX
from fedunet.segmentation.metrics import ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def test_miou_and_pixel_accuracy_against_a_hand_computed_example():
    # 4 classes; class 3 appears in neither prediction nor ground truth; one pixel is ignored (255).
    target = torch.tensor([[0, 0, 0, 1], [1, 2, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 3]])  # the prediction at the ignored pixel is not counted
    # valid (truth, pred) pairs: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0)  -> 7 pixels, 4 correct
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # IoU = TP / (row sum + column sum - TP):
    #   class 0: 2 / (3 + 3 - 2) = 1/2;  class 1: 1 / (2 + 2 - 1) = 1/3;  class 2: 1 / (2 + 2 - 1) = 1/3
    #   class 3: 0 / 0 -> absent from both -> NaN, left out of the mean
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3]) and math.isnan(iou[3])
    # mIoU = (1/2 + 1/3 + 1/3) / 3 = 7/18 (it would be 7/24 if the absent class counted as 0)
    assert mean_iou(cm).item() == pytest.approx(7 / 18)
    assert pixel_accuracy(cm).item() == pytest.approx(4 / 7)
    # a class predicted but absent from the ground truth scores 0 and stays in the mean:
    # predicting 3 at (1, 2) instead of 0 -> class 0: 2 / (3 + 2 - 2) = 2/3, class 3: 0 / (0 + 1 - 0) = 0
    pred2 = pred.clone()
    pred2[1, 2] = 3
    cm2 = confusion_matrix(pred2, target, 4)
    assert iou_per_class(cm2).tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    assert mean_iou(cm2).item() == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 0) / 4)  # = 1/3
    s = metrics.segmentation_scores(cm)
    assert s["miou"] == pytest.approx(7 / 18) and s["pixel_acc"] == pytest.approx(4 / 7) and s["pixels"] == 7


def test_confusion_matrix_accumulates_batches_from_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 8, 8, generator=g)
    target = torch.randint(0, 5, (6, 8, 8), generator=g)
    target[0, 0, :3] = IGNORE_INDEX
    meter = ConfusionMatrix(5)
    for lo in range(0, 6, 4):
        meter.update(logits[lo : lo + 4], target[lo : lo + 4])
    whole = confusion_matrix(logits.argmax(1), target, 5)
    assert torch.equal(meter.matrix, whole) and int(whole.sum()) == 6 * 64 - 3
    # against a plain per-pixel count
    ref = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), logits.argmax(1).flatten().tolist()):
        if t != IGNORE_INDEX:
            ref[t, p] += 1
    assert whole.numpy().tolist() == ref.tolist()
    assert meter.scores()["pixel_acc"] == pytest.approx(np.trace(ref) / ref.sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_confusion_matrix_stays_on_the_device():
    meter = ConfusionMatrix(3, device="cuda")
    meter.update(torch.zeros(2, 3, 4, 4, device="cuda"), torch.zeros(2, 4, 4, dtype=torch.long, device="cuda"))
    assert meter.matrix.device.type == "cuda" and int(meter.matrix[0, 0]) == 32


def test_confusion_matrix_reads_nothing_on_the_host():
    """No op that makes the host wait for the device on CUDA: no tensor read as a number, no
    data-dependent output size, and no bincount (CUDA reads its input's min and max on the host)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        seen: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    target = torch.randint(0, 4, (3, 5, 5))
    target[0, 0] = IGNORE_INDEX
    with Ops() as ops:
        meter = ConfusionMatrix(4)
        meter.update(torch.randn(3, 4, 5, 5), target)
    syncing = {"bincount", "_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "index_put_", "index_put"}
    assert not ops.seen & syncing, ops.seen & syncing
    assert int(meter.matrix.sum()) == 3 * 25 - 5
