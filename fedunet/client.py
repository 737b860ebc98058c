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
    val_indices: Tensor | None = None  # validation split carved from the training data (best-round selection)
    bf16: bool = False
    # torch.compile on: the run's compiled regions (fedunet.compile.Compiler), shared by all clients
    compiler: Callable[[nn.Module, str, Tensor], Tensor] | None = None
    cuda_deterministic: bool = False  # swap ops without deterministic CUDA kernels (fedunet.determinism)
    state: dict = field(default_factory=dict)  # method-specific per-client tensors (e.g. global prototypes)
    aux: dict[str, nn.Module] = field(default_factory=dict)  # method-specific extra models (FML's meme, FedKD's mentee)

    @property
    def device(self) -> torch.device:
        return self.loader.images.device

    def attach(self, name: str, module: nn.Module) -> nn.Module:
        """Add an extra trainable model: moved to the client's device and trained by its optimizer."""
        module = module.to(self.device)
        if self.loader.normalize.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.cuda_deterministic:
            from fedunet.determinism import replace_nondeterministic

            replace_nondeterministic(module)
        self.aux[name] = module
        self.optimizer.add_param_group({"params": list(module.parameters())})
        return module

    @property
    def num_train(self) -> int:
        return len(self.loader.indices)

    @property
    def num_test(self) -> int:
        return len(self.test_indices)

    def unaugmented_batches(self, batch_size: int = 500):
        """The client's training samples in order, normalized, without augmentation."""
        loader = self.loader
        for start in range(0, len(loader.indices), batch_size):
            idx = loader.indices[start : start + batch_size]
            yield loader.normalize(loader.images[idx]), loader.labels[idx]

    def autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.loader.images.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # Every forward pass of a method goes through these four, so that it runs compiled when
    # torch.compile is on (a method calling ``client.model.features`` directly runs eagerly).

    def _call(self, model: nn.Module, entry: str, x: Tensor) -> Tensor:
        if self.compiler is None:
            return model(x) if entry == "forward" else model.features(x)
        return self.compiler(model, entry, x)

    def logits(self, x: Tensor) -> Tensor:
        """Class scores of the client's model."""
        return self._call(self.model, "forward", x)

    def features(self, x: Tensor) -> Tensor:
        """The classifier's input of the client's model (``ClientModel.features``)."""
        return self._call(self.model, "features", x)

    def aux_logits(self, name: str, x: Tensor) -> Tensor:
        """Class scores of the extra model ``name`` (FML's meme, FedKD's mentee)."""
        return self._call(self.aux[name], "forward", x)

    def aux_features(self, name: str, x: Tensor) -> Tensor:
        return self._call(self.aux[name], "features", x)

    def train(self, epochs: int, loss_fn: LossFn) -> TrainStats:
        """Local training (of the model and any extra models the method attached)."""
        self.model.train()
        for module in self.aux.values():
            module.train()
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
    """The local objective: cross-entropy of the class scores; per pixel for masks ``(B, H, W)``
    (segmentation), over the pixels not marked ``IGNORE_INDEX``."""
    if y.dim() > 1:
        from fedunet.segmentation.evaluation import pixel_loss

        return pixel_loss(client.logits(x), y)
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
