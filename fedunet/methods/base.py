"""The interface every federated method implements, and the shared base classes of the methods.

A round, as the engine (``fedunet/federated.py``) runs it, in the spirit of Flower's
strategies: small hooks, the round passed in, the server step returning its numbers::

    participants = method.configure_round(round, clients, generator)
    for client in participants:
        method.begin_round(client, round)             # reset what the client accumulates
        client.train(epochs, method.loss)             # local objective
        payload = method.upload(client, round)        # named tensors, serialized for real
    for each payload: decode it against method.upload_spec(client), method.check_upload(client, tensors)
    message, numbers = method.aggregate(round, valid_uploads)   # server
    for client in clients: method.download(client, message)     # serialized and decoded too

Server hooks take the round first (as Flower's ``aggregate_fit(server_round, ...)``), client hooks
take the client first.  ``upload`` is pure: it reads the client and changes nothing, so calling
it twice gives the same payload (what a client accumulates while training is reset in
``begin_round``).  The numbers ``aggregate`` returns (FedKD's SVD energy and rank, FedTGP's
margin...) go into the round's row of ``metrics.csv`` as ``server_<name>`` columns
(:data:`SERVER_PREFIX`); ``summary.json`` leaves them out of its final row.

A new method is one file: subclass :class:`Method` (or :class:`StateSharing`, which FedAvgs
model tensors chosen by name, or :class:`PrototypeMethod`, which uploads class prototypes), set
``name``, override what differs.  Server-side helpers (weighted means, what clients decode,
training on prototypes) are in ``fedunet/methods/aggregate.py``; the client-side prototype math
is in ``fedunet/methods/prototypes.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedunet.client import Client, cross_entropy
from fedunet.methods.aggregate import as_sent, weighted_mean
from fedunet.methods.prototypes import class_feature_means, prototype_loss, prototype_scores
from fedunet.model import select_state
from fedunet.serialization import PayloadError, PayloadSpec

# metrics.csv column prefix of the numbers a method's server step returns
SERVER_PREFIX = "server_"


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
    # a method FedUNet is measured against (False: FedUNet, its whole-U-Net ablation, Local); an
    # experiment with one gets a row per method in the study's methods table
    baseline: ClassVar[bool] = True
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
        fraction = self.cfg["federated"]["participation"]
        if fraction >= 1.0:
            return list(clients)
        k = participants(fraction, len(clients))
        chosen = torch.randperm(len(clients), generator=generator)[:k].sort().values
        return [clients[i] for i in chosen.tolist()]

    def begin_round(self, client: Client, round_: int) -> None:
        """Before ``client`` trains in round ``round_``: reset what its local training accumulates
        for the upload (FD's logit sums, the prototype sums of ``prototypes: during``)."""

    def loss(self, client: Client, x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(client, x, y)

    def predict(self, client: Client, x: Tensor) -> Tensor:
        """Class scores used for evaluation (the local model's logits unless a method says otherwise)."""
        return client.logits(x)

    def upload(self, client: Client, round_: int) -> dict[str, Tensor] | None:
        """What ``client`` sends after local training in round ``round_`` (``None``: nothing).
        Pure: it changes neither the client nor the method."""
        return None

    def upload_spec(self, client: Client) -> PayloadSpec | None:
        """What the server accepts from ``client``: names, shapes, dtypes, size."""
        return None

    def check_upload(self, client: Client, tensors: dict[str, Tensor]) -> None:
        """Method-specific checks of a decoded payload (beyond names, shapes, dtypes, finiteness);
        raise :class:`fedunet.serialization.PayloadError` to reject it."""

    def aggregate(self, round_: int, uploads: list[Upload]) -> tuple[dict[str, Tensor] | None, dict[str, float]]:
        """Server step of round ``round_`` over the accepted uploads: the message broadcast to the
        clients (``None``: nothing), and the server's numbers of the round (``{}``: none), which
        the engine writes to ``metrics.csv`` as ``server_<name>``."""
        return None, {}

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

    def payload_spec(self, template: dict[str, Tensor]) -> PayloadSpec:
        """What the server accepts when every upload has the names, shapes and dtypes of
        ``template``: in the run's payload dtype, within :meth:`max_bytes`."""
        return PayloadSpec.for_tensors(template, self.cfg["federated"]["payload_dtype"], max_bytes=self.max_bytes(template))


def participants(fraction: float, num_clients: int) -> int:
    """floor(fraction * clients), at least one; 1e-9 absorbs binary rounding (0.29 * 100 is 28.999...)."""
    return max(1, math.floor(fraction * num_clients + 1e-9))


def clip_gradients(client: Client, modules: list[torch.nn.Module], max_norm: float | None) -> None:
    """Clip the gradient norm of each module separately to ``max_norm`` before every optimizer step
    of ``client`` (HtFLlib's ``clip_grad_norm_(model.parameters(), 10)`` per model); ``None``: no clipping."""
    if max_norm is None:
        return

    def clip(optimizer, args, kwargs):
        for module in modules:
            torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)

    client.optimizer.register_step_pre_hook(clip)


def receive_per_class(client: Client, name: str, table: Tensor, present: Tensor) -> None:
    """Store a global per-class table (prototypes, mean logits) as ``client.state[name]`` with which
    classes have a row (``present``); ``present`` arrives on the host, where whether any class has
    one (``any_present``) is read once per round instead of at every step."""
    client.state[name] = table.float().to(client.device)
    client.state["present"] = present.to(client.device)
    client.state["any_present"] = bool(present.any())


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
        self.spec = self.payload_spec(self.global_state)
        return self.global_state

    def shared(self, client: Client) -> dict[str, Tensor]:
        return select_state(client.model, self.prefix, self.cfg["federated"]["share_buffers"])

    def upload(self, client: Client, round_: int) -> dict[str, Tensor]:
        return self.shared(client)

    def upload_spec(self, client: Client) -> PayloadSpec:
        return self.spec

    def mean(self, uploads: list[Upload]) -> dict[str, Tensor]:
        """The server's average of the uploads (FedAvg's sample-weighted mean)."""
        return weighted_mean(uploads)

    def aggregate(self, round_: int, uploads: list[Upload]) -> tuple[dict[str, Tensor], dict[str, float]]:
        self.global_state = as_sent(self.mean(uploads), self.cfg["federated"]["payload_dtype"])
        return self.global_state, {}

    def download(self, client: Client, message: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, target in self.shared(client).items():
                target.copy_(message[name])

    def state_dict(self) -> dict:
        return {"global_state": self.global_state}

    def load_state_dict(self, state: dict) -> None:
        self.global_state = state["global_state"]


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
            c.state["any_present"] = False  # on the host, so that no step reads ``present`` back
            if self.during:
                c.state["proto_sums"] = torch.zeros(self.num_classes, self.width, device=c.device)
                c.state["proto_counts"] = torch.zeros(self.num_classes, dtype=torch.int64, device=c.device)
        template = {
            "protos": torch.zeros(self.num_classes, self.width),
            "counts": torch.zeros(self.num_classes, dtype=torch.int64),
        }
        self.spec = self.payload_spec(template)
        return None

    def upload_spec(self, client: Client) -> PayloadSpec:
        return self.spec

    def begin_round(self, client: Client, round_: int) -> None:
        if self.during:
            client.state["proto_sums"].zero_()
            client.state["proto_counts"].zero_()

    def upload(self, client: Client, round_: int) -> dict[str, Tensor]:
        if self.during:
            st = client.state
            counts = st["proto_counts"].clone()
            protos = st["proto_sums"] / counts.clamp(min=1).unsqueeze(1).to(st["proto_sums"].dtype)
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
        if client.state["any_present"]:
            loss = loss + self.hp["lamda"] * prototype_loss(features, y, client.state["protos"], client.state["present"])
        return loss

    def receive_prototypes(self, client: Client, protos: Tensor, present: Tensor) -> None:
        """Store the global prototypes and which classes have one (see :func:`receive_per_class`)."""
        receive_per_class(client, "protos", protos, present)

    def predict(self, client: Client, x: Tensor) -> Tensor:
        if self.hp.get("inference") == "prototype" and client.state["any_present"]:
            return prototype_scores(client.model.features(x), client.state["protos"], client.state["present"])
        return client.logits(x)
