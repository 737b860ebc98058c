"""Server-side building blocks the methods' ``aggregate`` steps share: weighted means, what a
receiver decodes from a message, and training on the round's uploaded prototypes.

Every function here takes checked uploads (:class:`fedunet.methods.base.Upload`: a client's
decoded tensors, on the CPU, and its aggregation weight) or the server's own tensors, and
touches no client.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fedunet.serialization import WIRE_DTYPES

if TYPE_CHECKING:
    from fedunet.methods.base import Upload


def weighted_mean(uploads: list[Upload]) -> dict[str, Tensor]:
    """FedAvg: sample-weighted mean of each named tensor; integer tensors are rounded."""
    total = sum(u.weight for u in uploads)
    out: dict[str, Tensor] = {}
    for name, first in uploads[0].tensors.items():
        acc = torch.zeros(first.shape, dtype=torch.float64 if first.dtype == torch.float64 else torch.float32)
        for u in uploads:
            acc.add_(u.tensors[name].to(acc.dtype), alpha=u.weight / total)
        out[name] = acc if first.is_floating_point() else acc.round().to(first.dtype)
    return out


def reweighted(uploads: list[Upload], aggregation: str) -> list[Upload]:
    """The uploads with FedAvg's sample weights (``weighted``) or equal weights (``mean``, HtFLlib's servers)."""
    if aggregation == "weighted":
        return uploads
    return [dataclasses.replace(u, weight=1.0) for u in uploads]


def as_sent(tensors: dict[str, Tensor], payload_dtype: str) -> dict[str, Tensor]:
    """The values a receiver decodes from a payload in ``payload_dtype`` (floats rounded to the wire
    type and back); what a server keeps of its own message, so that it holds what the clients hold."""
    wire = WIRE_DTYPES[payload_dtype]
    if wire == torch.float32:
        return tensors
    return {k: v.to(wire).to(v.dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def uploaded_prototypes(uploads: list[Upload]) -> tuple[Tensor, Tensor]:
    """Every (prototype, class) pair the clients sent this round, as float32 tensors."""
    protos, labels = [], []
    for u in uploads:
        have = u.tensors["counts"] > 0
        protos.append(u.tensors["protos"][have].float())
        labels.append(torch.nonzero(have).flatten())
    return torch.cat(protos), torch.cat(labels)


def train_on_prototypes(
    parameters, loss_fn, protos: Tensor, labels: Tensor, lr: float, epochs: int, batch_size: int, generator: torch.Generator
) -> None:
    """Server-side plain SGD over the round's (prototype, class) pairs (FedGH's header, FedTGP's generator)."""
    opt = torch.optim.SGD(parameters, lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(protos[idx], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
