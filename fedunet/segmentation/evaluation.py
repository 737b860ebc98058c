"""Both evaluation protocols of a segmentation run, per round, from confusion matrices accumulated on
the device: no per-sample Python and one host transfer per evaluation (every client's matrices,
losses and norms stacked into one tensor).

* **personalized**: each client model on its own held-out canvases; ``pers_miou`` and
  ``pers_pixel_acc`` are read from the confusion matrix summed over clients (pixel-weighted, the
  analogue of sample-weighted accuracy); ``pers_miou_std`` is the spread of per-client mIoU;
* **global**: each client model on the global test canvases; ``global_miou`` and ``global_pixel_acc``
  are per-client values averaged over clients (and ``global_miou_<architecture>`` per backbone);
* ``val_miou`` (and ``val_pixel_acc``): the validation canvases carved from the clients' training
  data, summed over clients: what the best round is chosen on, never a test set;
* with a U-Net and ``eval.diagnostics``: ``pers_miou_backbone_only`` / ``pers_miou_unet_only`` (the
  other path zeroed at the classifier input) and the mean per-pixel L2 norm of each path there
  (``norm_backbone``, ``norm_unet``).

A class absent from both the prediction and the ground truth of a matrix is left out of its mean
(:func:`~fedunet.segmentation.metrics.iou_per_class`), so a client whose canvases never show a class
is not penalized for it in the personalized protocol.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fedunet.data import eval_batches
from fedunet.metrics import _std
from fedunet.segmentation.dataset import IGNORE_INDEX
from fedunet.segmentation.metrics import confusion_matrix, mean_iou, pixel_accuracy


def pixel_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Per-pixel cross-entropy over the counted pixels (``IGNORE_INDEX`` left out): their mean, or
    their sum.  Reduced from the per-pixel values, which CUDA computes deterministically (its fused
    2-d reduction does not)."""
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    if reduction == "sum":
        return per_pixel.sum()
    return per_pixel.sum() / (target != IGNORE_INDEX).sum().clamp(min=1)


@torch.inference_mode()
def confusion(client, images: Tensor, masks: Tensor, indices, batch_size: int, normalizer, num_classes: int, predict=None):
    """(confusion matrix ``(K, K)`` int64, summed per-pixel loss float64) of ``client``'s model on
    the given canvases (all if ``indices`` is None), both still on the device."""
    predict = predict or (lambda c, x: c.logits(x))
    client.model.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=images.device)
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    for x, y in eval_batches(images, masks, indices, batch_size, normalizer):
        y = y.long()
        with client.autocast():
            logits = predict(client, x)
        matrix += confusion_matrix(logits.argmax(1), y, num_classes)
        loss += pixel_loss(logits.float(), y, "sum").double()
    return matrix, loss


def _client_parts(c, data, cfg: dict, normalizer, predict, diagnose: bool) -> dict[str, Tensor]:
    """One client's device tensors of an evaluation, by name (matrices flattened, float64)."""
    bs, k = cfg["eval"]["batch_size"], data.num_classes

    def on(images, masks, indices):
        matrix, loss = confusion(c, images, masks, indices, bs, normalizer, k, predict)
        return matrix.flatten().double(), loss.view(1)

    parts: dict[str, Tensor] = {}
    fusion = c.model.fusion if diagnose else None
    if fusion is not None:
        fusion.norms = []
    parts["pers"], parts["pers_loss"] = on(data.train_images, data.train_masks, c.test_indices)
    if fusion is not None:
        parts["norms"] = torch.stack(fusion.norms).sum(0).double() if fusion.norms else torch.zeros(2, dtype=torch.float64)
        fusion.norms = None
        for path, ablate in (("backbone", "unet"), ("unet", "backbone")):
            fusion.ablate = ablate
            try:
                parts[f"pers_{path}_only"], _ = on(data.train_images, data.train_masks, c.test_indices)
            finally:
                fusion.ablate = None
    if cfg["eval"]["validation_fraction"] > 0:  # every client (one without validation canvases counts none)
        parts["val"], _ = on(data.train_images, data.train_masks, c.val_indices)
    if cfg["eval"]["global"]:
        parts["global"], parts["global_loss"] = on(data.test_images, data.test_masks, None)
    return parts


def _to_host(per_client: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Every client's tensors in one transfer (the evaluation's only host sync), split back by name."""
    names = list(per_client[0])
    sizes = [per_client[0][n].numel() for n in names]
    host = torch.stack([torch.cat([parts[n].reshape(-1) for n in names]) for parts in per_client]).cpu()
    return [dict(zip(names, row.split(sizes))) for row in host]


def evaluate_round(clients, data, cfg: dict, normalizer, predict, per_client: dict[int, dict], diagnose: bool | None = None) -> dict:
    """The round's segmentation metrics (a ``metrics.csv`` row's part), filling each client's
    ``clients.csv`` row in ``per_client`` too; the path diagnostics when ``diagnose`` (by default,
    ``eval.diagnostics``: the engine passes it for the round, ``eval.diagnostics_every``)."""
    diagnose = cfg["eval"]["diagnostics"] if diagnose is None else diagnose
    k = data.num_classes
    pixels = data.input_size**2
    results = _to_host([_client_parts(c, data, cfg, normalizer, predict, diagnose) for c in clients])

    def matrix(r, name):
        return r[name].view(k, k)

    row: dict = {}
    pers = [matrix(r, "pers") for r in results]
    pers_miou = [float(mean_iou(m)) for m in pers]
    total = sum(pers)
    row["pers_miou"] = float(mean_iou(total))
    row["pers_miou_std"] = _std(pers_miou)
    row["pers_pixel_acc"] = float(pixel_accuracy(total))
    row["pers_loss"] = float(sum(r["pers_loss"] for r in results) / total.sum().clamp(min=1))
    for c, r, miou in zip(clients, results, pers_miou):
        per_client[c.index].update(pers_miou=miou, pers_pixel_acc=float(pixel_accuracy(matrix(r, "pers"))))
    if "val" in results[0]:
        val = sum(matrix(r, "val") for r in results)
        row["val_miou"], row["val_pixel_acc"] = float(mean_iou(val)), float(pixel_accuracy(val))
        for c, r in zip(clients, results):
            per_client[c.index]["val_miou"] = float(mean_iou(matrix(r, "val")))
    if "norms" in results[0]:
        for path in ("backbone", "unet"):
            row[f"pers_miou_{path}_only"] = float(mean_iou(sum(matrix(r, f"pers_{path}_only") for r in results)))
        shown = pixels * sum(c.num_test for c in clients)  # every pixel of the held-out canvases
        norms = sum(r["norms"] for r in results) / max(shown, 1)
        row["norm_backbone"], row["norm_unet"] = float(norms[0]), float(norms[1])
    if "global" in results[0]:
        glob = [matrix(r, "global") for r in results]
        miou = [float(mean_iou(m)) for m in glob]
        acc = [float(pixel_accuracy(m)) for m in glob]
        row["global_miou"] = sum(miou) / len(miou)
        row["global_miou_std"] = _std(miou)
        row["global_pixel_acc"] = sum(acc) / len(acc)
        row["global_loss"] = sum(float(r["global_loss"]) / max(float(m.sum()), 1.0) for r, m in zip(results, glob)) / len(glob)
        for c, m_iou, a in zip(clients, miou, acc):
            per_client[c.index].update(global_miou=m_iou, global_pixel_acc=a)
        for arch in sorted({c.architecture for c in clients}):
            mine = [m for c, m in zip(clients, miou) if c.architecture == arch]
            row[f"global_miou_{arch}"] = sum(mine) / len(mine)
    return row
