"""Client-side prototype math of FedProto, FedGH and FedTGP: class means of a model's features,
the regularizer that pulls features to the global prototypes, and nearest-prototype scores.
(The server side, every (prototype, class) pair of a round and training on them, is in
``fedunet/methods/aggregate.py``.)"""

from __future__ import annotations

import torch
from torch import Tensor

from fedunet.client import Client


@torch.no_grad()
def class_feature_means(client: Client) -> tuple[Tensor, Tensor]:
    """Per-class mean of the model's features over the client's training samples.

    Eval mode, no augmentation: the prototypes of the model as trained this round.
    Returns ``(means C x K, counts C)``; classes the client lacks have zero rows.
    """
    model = client.model
    was_training = model.training
    model.eval()
    sums = counts = None
    for x, y in client.unaugmented_batches():
        with client.autocast():
            f = model.features(x).float()
        if sums is None:
            num_classes = model.classifier.out_features
            sums = torch.zeros(num_classes, f.shape[1], device=f.device)
            counts = torch.zeros(num_classes, dtype=torch.int64, device=f.device)
        sums.index_add_(0, y, f)
        counts += torch.bincount(y, minlength=sums.shape[0])
    model.train(was_training)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    return means.cpu(), counts.cpu()


def prototype_loss(features: Tensor, y: Tensor, prototypes: Tensor, present: Tensor) -> Tensor:
    """MSE between features and the global prototype of their class (FedProto/FedTGP regularizer).

    Rows of classes without a global prototype contribute nothing, as in HtFLlib.
    """
    target = torch.where(present[y].unsqueeze(1), prototypes[y].to(features.dtype), features.detach())
    return torch.nn.functional.mse_loss(features, target)


def prototype_scores(features: Tensor, prototypes: Tensor, present: Tensor) -> Tensor:
    """Class scores from the distance to each global prototype (nearest prototype wins)."""
    dist = torch.cdist(features.float(), prototypes.float().to(features.device)) ** 2
    return -dist.masked_fill(~present.to(features.device).unsqueeze(0), float("inf"))
