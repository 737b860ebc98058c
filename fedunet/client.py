"""A simulated client: its model, optimizer, data and random generator, all on the device."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fedunet.data import ClientLoader
from fedunet.model import ClientModel

LossFn = Callable[["Client", Tensor, Tensor], Tensor]


@dataclass
class TrainStats:
    loss: float
    samples: int
    steps: int
    finite: bool


@dataclass
class Client:
    index: int
    architecture: str
    model: ClientModel
    optimizer: torch.optim.Optimizer
    loader: ClientLoader
    test_indices: Tensor
    generator: torch.Generator
    bf16: bool = False
    forward: nn.Module | None = None  # the compiled model, when torch.compile is on
    state: dict = field(default_factory=dict)  # method-specific per-client state (e.g. prototypes)

    @property
    def num_train(self) -> int:
        return len(self.loader.indices)

    @property
    def num_test(self) -> int:
        return len(self.test_indices)

    def autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.loader.images.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(self, x: Tensor) -> Tensor:
        return (self.forward or self.model)(x)

    def train(self, epochs: int, loss_fn: LossFn) -> TrainStats:
        """Local training; stops early (and reports it) when the loss stops being finite."""
        self.model.train()
        total = torch.zeros((), device=self.loader.images.device)
        samples = steps = 0
        for _ in range(epochs):
            for x, y in self.loader:
                with self.autocast():
                    loss = loss_fn(self, x, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.detach().float() * len(y)
                samples += len(y)
                steps += 1
        mean = float(total) / max(samples, 1)  # one device sync per round, not per step
        return TrainStats(loss=mean, samples=samples, steps=steps, finite=math.isfinite(mean))


def cross_entropy(client: Client, x: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(client.logits(x), y)


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    opt = cfg["optimizer"]
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"])
    return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt["weight_decay"])


def learning_rate(cfg: dict, round_: int) -> float:
    """The learning rate of round ``round_`` (1-based); stateless, so resuming needs nothing saved."""
    opt, rounds = cfg["optimizer"], cfg["federated"]["rounds"]
    if opt["schedule"] == "cosine":
        return opt["lr"] * 0.5 * (1 + math.cos(math.pi * (round_ - 1) / rounds))
    if opt["schedule"] == "step":
        return opt["lr"] * opt["step_gamma"] ** ((round_ - 1) // opt["step_rounds"])
    return opt["lr"]
