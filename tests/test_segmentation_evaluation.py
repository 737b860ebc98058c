"""Both segmentation protocols per round (fedunet/segmentation/evaluation.py) against a hand-computed
example: stub models whose predictions are written in their canvases, so every confusion matrix,
mIoU and pixel accuracy below is counted by hand."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import one_thread  # noqa: F401  (autouse: one thread)
from torch import nn

from fedunet.batches import Normalizer
from fedunet.client import Client
from fedunet.segmentation.dataset import IGNORE_INDEX, SegmentationDataset
from fedunet.segmentation.evaluation import confusion, evaluate_round, pixel_loss

K = 3
X = IGNORE_INDEX


class Written(nn.Module):
    """Predicts, at every pixel, the class written there in the canvas plus ``shift`` (mod K)."""

    fusion = None

    def __init__(self, shift: int):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return F.one_hot((x[:, 0].round().long() + self.shift) % K, K).permute(0, 3, 1, 2).float()


def client(index, shift, test, val):
    loader = SimpleNamespace(images=torch.zeros(1), normalize=SimpleNamespace(channels_last=False))
    val = torch.tensor(val, dtype=torch.long)
    return Client(index, f"arch{shift}", Written(shift), None, loader, torch.tensor(test), None, val_indices=val)


def canvases(rows):
    return torch.tensor(rows, dtype=torch.uint8)


# Canvases 0, 1: client A's held-out; 2: client B's held-out; 3: client A's validation canvas.
# The images hold what A's model (shift 0) predicts; B's model adds 1, so B's image holds pred - 1.
TRAIN_MASKS = canvases([[[0, 1], [1, 2]], [[0, 0], [2, X]], [[0, 0], [0, 0]], [[0, 1], [1, 2]]])
TRAIN_IMAGES = canvases([[[0, 1], [2, 2]], [[1, 0], [2, 0]], [[2, 2], [2, 0]], [[0, 1], [2, 2]]]).unsqueeze(1)
TEST_MASKS = canvases([[[0, 1], [2, 2]]])
TEST_IMAGES = canvases([[[0, 1], [2, 0]]]).unsqueeze(1)
# rows: ground truth, columns: prediction (counted by hand from the canvases above)
A_PERS = [[2, 1, 0], [0, 1, 1], [0, 0, 2]]  # IoU 2/3, 1/3, 2/3: mIoU 5/9; 5 of 7 counted pixels right
B_PERS = [[3, 1, 0], [0, 0, 0], [0, 0, 0]]  # IoU 3/4, 0, absent: mIoU 3/8; 3 of 4 right
A_GLOBAL = [[1, 0, 0], [0, 1, 0], [1, 0, 1]]  # IoU 1/2, 1, 1/2: mIoU 2/3; 3 of 4 right
B_GLOBAL = [[0, 1, 0], [0, 0, 1], [1, 1, 0]]  # nothing right: mIoU 0
A_VAL = [[1, 0, 0], [0, 1, 1], [0, 0, 1]]  # IoU 1, 1/2, 1/2: mIoU 2/3; 3 of 4 right


@pytest.fixture
def setup():
    data = SegmentationDataset("hand", TRAIN_IMAGES, TRAIN_MASKS, TEST_IMAGES, TEST_MASKS, K, ("background", "a", "b"))
    normalizer = Normalizer(torch.zeros(1), torch.full((1,), 1 / 255), torch.device("cpu"))  # the identity
    clients = [client(0, 0, [0, 1], [3]), client(1, 1, [2], [])]  # B has no validation canvas
    cfg = {"eval": {"batch_size": 1, "diagnostics": True, "global": True, "validation_fraction": 0.1}}
    return data, normalizer, clients, cfg


def test_confusion_matrix_of_a_client_is_counted_on_the_device_over_batches(setup):
    data, normalizer, (a, b), _ = setup
    matrix, loss = confusion(a, data.train_images, data.train_masks, a.test_indices, 1, normalizer, K)
    assert matrix.tolist() == A_PERS and matrix.dtype == torch.int64  # the ignored pixel is not counted
    right, wrong = math.log(math.e + 2) - 1, math.log(math.e + 2)  # cross-entropy of one-hot logits
    assert float(loss) == pytest.approx(5 * right + 2 * wrong)
    matrix, _ = confusion(b, data.test_images, data.test_masks, None, 4, normalizer, K)
    assert matrix.tolist() == B_GLOBAL


def test_round_metrics_against_the_hand_computed_example(setup):
    data, normalizer, clients, cfg = setup
    per_client = {0: {}, 1: {}}
    row = evaluate_round(clients, data, cfg, normalizer, None, per_client)
    # personalized: the matrix summed over clients [[5, 2, 0], [0, 1, 1], [0, 0, 2]]
    assert row["pers_miou"] == pytest.approx((5 / 7 + 1 / 4 + 2 / 3) / 3)
    assert row["pers_pixel_acc"] == pytest.approx(8 / 11)
    assert row["pers_miou_std"] == pytest.approx((5 / 9 - 3 / 8) / 2)  # population std of two clients
    assert row["pers_loss"] == pytest.approx((11 * math.log(math.e + 2) - 8) / 11)
    # global: per client, then the mean over clients
    assert row["global_miou"] == pytest.approx((2 / 3 + 0) / 2) and row["global_miou_std"] == pytest.approx(1 / 3)
    assert row["global_pixel_acc"] == pytest.approx((3 / 4 + 0) / 2)
    assert row["global_miou_arch0"] == pytest.approx(2 / 3) and row["global_miou_arch1"] == 0
    # validation: client A's canvas only (B has none)
    assert row["val_miou"] == pytest.approx(2 / 3) and row["val_pixel_acc"] == pytest.approx(3 / 4)
    assert "pers_miou_unet_only" not in row  # no U-Net, no path diagnostics
    assert per_client[0]["pers_miou"] == pytest.approx(5 / 9) and per_client[1]["pers_miou"] == pytest.approx(3 / 8)
    assert per_client[0]["pers_pixel_acc"] == pytest.approx(5 / 7) and per_client[1]["global_miou"] == 0
    assert per_client[0]["val_miou"] == pytest.approx(2 / 3) and math.isnan(per_client[1]["val_miou"])


def test_one_host_transfer_per_evaluation(setup, monkeypatch):
    data, normalizer, clients, cfg = setup
    calls = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(tuple(self.shape)) or cpu(self, *a, **k))
    evaluate_round(clients, data, cfg, normalizer, None, {0: {}, 1: {}})
    # every client's matrices and losses, stacked: (clients, 3 matrices + 2 losses)
    assert calls == [(2, 3 * K * K + 2)]


def test_ignored_pixels_count_in_neither_loss_nor_matrix():
    logits = torch.randn(2, K, 3, 3)
    target = torch.randint(0, K, (2, 3, 3))
    ignored = target.clone()
    ignored[0, 0] = IGNORE_INDEX
    keep = ignored != IGNORE_INDEX
    manual = F.cross_entropy(logits, target, reduction="none")[keep].mean()
    assert pixel_loss(logits, ignored) == pytest.approx(float(manual))
    assert pixel_loss(logits, ignored, "sum") == pytest.approx(float(manual) * int(keep.sum()))
