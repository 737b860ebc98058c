"""The interface every federated method implements, and the shared-by-name base of the FedUNet family.

A round, as the engine runs it (in the spirit of Flower's strategies)::

    participants = method.configure_round(round, clients, generator)
    for client in participants:
        client.train(epochs, method.loss)            # local objective
        payload = method.upload(client)              # named tensors, serialized for real
    message = method.aggregate(valid_uploads)        # server, after checking every payload
    for client in clients: method.download(client, message)

A new method is one file: subclass :class:`Method`, set ``name``, override what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedunet.client import Client, cross_entropy
from fedunet.model import select_state
from fedunet.serialization import WIRE_DTYPES, PayloadError, PayloadSpec


@dataclass
class Upload:
    """A checked payload from one client: its tensors (CPU) and its aggregation weight."""

    client: Client
    tensors: dict[str, Tensor]
    weight: float


class Method:
    name: ClassVar[str] = ""
    attach_unet: ClassVar[bool] = True  # model composition when model.unet.attach is "auto"
    needs_projection: ClassVar[bool] = False  # features projected to model.feature_width
    communicates: ClassVar[bool] = True
    # JSON-schema properties of the method's hyperparameters (config section methods.<name>)
    options: ClassVar[dict] = {}

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.hp: dict = cfg.get("methods", {}).get(self.name, {})  # this method's hyperparameters

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        """Reject configurations this method cannot run; raise ``ValueError`` naming the field."""

    def setup(self, clients: list[Client]) -> dict[str, Tensor] | None:
        """Prepare server state once the clients exist; return a message to send before round 1."""
        return None

    def configure_round(self, round_: int, clients: list[Client], generator: torch.Generator) -> list[Client]:
        """Sample the participants of a round: max(1, floor(participation * clients)) of them, the
        FedAvg convention (McMahan et al.; HtFLlib's int(clients * join_ratio))."""
        self.round = round_
        fraction = self.cfg["federated"]["participation"]
        if fraction >= 1.0:
            return list(clients)
        k = participants(fraction, len(clients))
        chosen = torch.randperm(len(clients), generator=generator)[:k].sort().values
        return [clients[i] for i in chosen.tolist()]

    def loss(self, client: Client, x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(client, x, y)

    def predict(self, client: Client, x: Tensor) -> Tensor:
        """Class scores used for evaluation (the local model's logits unless a method says otherwise)."""
        return client.logits(x)

    def upload(self, client: Client) -> dict[str, Tensor] | None:
        """What ``client`` sends after local training (``None``: nothing)."""
        return None

    def upload_spec(self, client: Client) -> PayloadSpec | None:
        """What the server accepts from ``client``: names, shapes, dtypes, size."""
        return None

    def check_upload(self, client: Client, tensors: dict[str, Tensor]) -> None:
        """Method-specific checks of a decoded payload (beyond names, shapes, dtypes, finiteness);
        raise :class:`fedunet.serialization.PayloadError` to reject it."""

    def aggregate(self, uploads: list[Upload]) -> dict[str, Tensor] | None:
        """Server step over the accepted uploads; returns the message broadcast to the clients."""
        return None

    def download(self, client: Client, message: dict[str, Tensor]) -> None:
        """Apply the server's message to a client."""

    def state_dict(self) -> dict:
        """Server state (and per-client method state not held by the clients) to checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def max_bytes(self, template: dict[str, Tensor]) -> int:
        """The server's size limit for one payload: configured, or twice the expected size."""
        limit = self.cfg["federated"]["max_payload_mb"]
        if limit is not None:
            return int(limit * 1e6)
        return 2 * sum(t.numel() * t.element_size() for t in template.values()) + 1_000_000


def participants(fraction: float, num_clients: int) -> int:
    """floor(fraction * clients), at least one; 1e-9 absorbs binary rounding (0.29 * 100 is 28.999...)."""
    return max(1, math.floor(fraction * num_clients + 1e-9))


def as_sent(tensors: dict[str, Tensor], payload_dtype: str) -> dict[str, Tensor]:
    """The values a receiver decodes from a payload in ``payload_dtype`` (floats rounded to the wire
    type and back); what a server keeps of its own message, so that it holds what the clients hold."""
    wire = WIRE_DTYPES[payload_dtype]
    if wire == torch.float32:
        return tensors
    return {k: v.to(wire).to(v.dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def reweighted(uploads: list[Upload], aggregation: str) -> list[Upload]:
    """The uploads with FedAvg's sample weights (``weighted``) or equal weights (``mean``, HtFLlib's servers)."""
    if aggregation == "weighted":
        return uploads
    return [Upload(u.client, u.tensors, 1.0) for u in uploads]


def clip_gradients(client: Client, modules: list[torch.nn.Module], max_norm: float | None) -> None:
    """Clip the gradient norm of each module separately to ``max_norm`` before every optimizer step
    of ``client`` (HtFLlib's ``clip_grad_norm_(model.parameters(), 10)`` per model); ``None``: no clipping."""
    if max_norm is None:
        return

    def clip(optimizer, args, kwargs):
        for module in modules:
            torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)

    client.optimizer.register_step_pre_hook(clip)


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


class StateSharing(Method):
    """Share every model tensor whose name starts with ``prefix``; FedAvg them on the server.

    Subclasses that share a module other than the client model override :meth:`shared`.
    """

    prefix: ClassVar[str] = ""

    def setup(self, clients: list[Client]) -> dict[str, Tensor]:
        states = [self.shared(c) for c in clients]
        ref = states[0]
        for c, s in zip(clients, states):
            if {k: tuple(v.shape) for k, v in s.items()} != {k: tuple(v.shape) for k, v in ref.items()}:
                raise ValueError(
                    f"method {self.name}: client {c.index} ({c.architecture}) has different tensors under "
                    f"{self.prefix!r} than client 0 ({clients[0].architecture})"
                )
        if not ref:
            raise ValueError(f"method {self.name}: no model tensor starts with {self.prefix!r}")
        # The server starts from client 0's initial values and sends them to everyone.
        self.global_state = {k: v.detach().to("cpu", copy=True) for k, v in ref.items()}
        self.spec = PayloadSpec.for_tensors(
            self.global_state, self.cfg["federated"]["payload_dtype"], max_bytes=self.max_bytes(self.global_state)
        )
        return self.global_state

    def shared(self, client: Client) -> dict[str, Tensor]:
        return select_state(client.model, self.prefix, self.cfg["federated"]["share_buffers"])

    def upload(self, client: Client) -> dict[str, Tensor]:
        return self.shared(client)

    def upload_spec(self, client: Client) -> PayloadSpec:
        return self.spec

    def aggregate(self, uploads: list[Upload]) -> dict[str, Tensor]:
        self.global_state = as_sent(weighted_mean(uploads), self.cfg["federated"]["payload_dtype"])
        return self.global_state

    def download(self, client: Client, message: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, target in self.shared(client).items():
                target.copy_(message[name])

    def state_dict(self) -> dict:
        return {"global_state": self.global_state}

    def load_state_dict(self, state: dict) -> None:
        self.global_state = state["global_state"]


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


class PrototypeMethod(Method):
    """Shared machinery of methods that upload per-class feature prototypes (FedProto, FedGH, FedTGP).

    Upload: ``protos`` (C x K, the class means of the trained model's features) and ``counts``
    (C, samples per class; zero marks a class the client lacks).  By default the means are
    taken after local training, in eval mode, over every training sample; a method with the
    option ``prototypes: during`` averages instead the train-mode features of every training
    step of the round (HtFLlib's FedProto, and FedProto's official code).
    """

    attach_unet = False
    needs_projection = True

    @property
    def during(self) -> bool:
        return self.hp.get("prototypes") == "during"

    def setup(self, clients: list[Client]) -> dict[str, Tensor] | None:
        model = clients[0].model
        self.num_classes, self.width = model.classifier.out_features, model.feature_dim
        for c in clients:
            c.state["protos"] = torch.zeros(self.num_classes, self.width, device=c.device)
            c.state["present"] = torch.zeros(self.num_classes, dtype=torch.bool, device=c.device)
            if self.during:
                c.state["proto_sums"] = torch.zeros(self.num_classes, self.width, device=c.device)
                c.state["proto_counts"] = torch.zeros(self.num_classes, dtype=torch.int64, device=c.device)
        template = {
            "protos": torch.zeros(self.num_classes, self.width),
            "counts": torch.zeros(self.num_classes, dtype=torch.int64),
        }
        self.spec = PayloadSpec.for_tensors(template, self.cfg["federated"]["payload_dtype"], max_bytes=self.max_bytes(template))
        return None

    def upload_spec(self, client: Client) -> PayloadSpec:
        return self.spec

    def upload(self, client: Client) -> dict[str, Tensor]:
        if self.during:
            st = client.state
            counts = st["proto_counts"].clone()
            protos = st["proto_sums"] / counts.clamp(min=1).unsqueeze(1).to(st["proto_sums"].dtype)
            st["proto_sums"].zero_()
            st["proto_counts"].zero_()
            return {"protos": protos.cpu(), "counts": counts.cpu()}
        protos, counts = class_feature_means(client)
        return {"protos": protos, "counts": counts}

    def check_upload(self, client: Client, tensors: dict[str, Tensor]) -> None:
        if bool((tensors["counts"] < 0).any()):
            raise PayloadError("tensor 'counts' has negative entries")

    def prototype_regularized_loss(self, client: Client, x: Tensor, y: Tensor) -> Tensor:
        """CE + lamda * MSE(features, global prototype of the class)."""
        features = client.model.features(x)
        if self.during and torch.is_grad_enabled():  # this step's features, for this round's upload
            client.state["proto_sums"].index_add_(0, y, features.detach().float())
            client.state["proto_counts"] += torch.bincount(y, minlength=self.num_classes)
        loss = torch.nn.functional.cross_entropy(client.model.classifier(features), y)
        if bool(client.state["present"].any()):
            loss = loss + self.hp["lamda"] * prototype_loss(features, y, client.state["protos"], client.state["present"])
        return loss

    def predict(self, client: Client, x: Tensor) -> Tensor:
        if self.hp.get("inference") == "prototype" and bool(client.state["present"].any()):
            return prototype_scores(client.model.features(x), client.state["protos"], client.state["present"])
        return client.logits(x)


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
