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

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from fedunet.client import Client, cross_entropy
from fedunet.model import select_state
from fedunet.serialization import PayloadSpec


@dataclass
class Upload:
    """A checked payload from one client: its tensors (CPU) and its aggregation weight."""

    client: Client
    tensors: dict[str, Tensor]
    weight: float


class Method:
    name: ClassVar[str] = ""
    attach_unet: ClassVar[bool] = True  # model composition when model.unet.attach is "auto"
    communicates: ClassVar[bool] = True

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        """Reject configurations this method cannot run; raise ``ValueError`` naming the field."""

    def setup(self, clients: list[Client]) -> dict[str, Tensor] | None:
        """Prepare server state once the clients exist; return a message to send before round 1."""
        return None

    def configure_round(self, round_: int, clients: list[Client], generator: torch.Generator) -> list[Client]:
        """Sample the participants of a round (fraction ``federated.participation``)."""
        fraction = self.cfg["federated"]["participation"]
        if fraction >= 1.0:
            return list(clients)
        k = max(1, round(fraction * len(clients)))
        chosen = torch.randperm(len(clients), generator=generator)[:k].sort().values
        return [clients[i] for i in chosen.tolist()]

    def loss(self, client: Client, x: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(client, x, y)

    def upload(self, client: Client) -> dict[str, Tensor] | None:
        """What ``client`` sends after local training (``None``: nothing)."""
        return None

    def upload_spec(self, client: Client) -> PayloadSpec | None:
        """What the server accepts from ``client``: names, shapes, dtypes, size."""
        return None

    def aggregate(self, uploads: list[Upload]) -> dict[str, Tensor] | None:
        """Server step over the accepted uploads; returns the message broadcast to the clients."""
        return None

    def download(self, client: Client, message: dict[str, Tensor]) -> None:
        """Apply the server's message to a client."""

    def state_dict(self) -> dict:
        """Server state to checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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
    """Share every model tensor whose name starts with ``prefix``; FedAvg them on the server."""

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
            self.global_state, self.cfg["federated"]["payload_dtype"], max_bytes=self._max_bytes()
        )
        return self.global_state

    def _max_bytes(self) -> int:
        limit = self.cfg["federated"]["max_payload_mb"]
        if limit is not None:
            return int(limit * 1e6)
        return 2 * sum(t.numel() * t.element_size() for t in self.global_state.values()) + 1_000_000

    def shared(self, client: Client) -> dict[str, Tensor]:
        return select_state(client.model, self.prefix, self.cfg["federated"]["share_buffers"])

    def upload(self, client: Client) -> dict[str, Tensor]:
        return self.shared(client)

    def upload_spec(self, client: Client) -> PayloadSpec:
        return self.spec

    def aggregate(self, uploads: list[Upload]) -> dict[str, Tensor]:
        self.global_state = weighted_mean(uploads)
        return self.global_state

    def download(self, client: Client, message: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, target in self.shared(client).items():
                target.copy_(message[name])

    def state_dict(self) -> dict:
        return {"global_state": self.global_state}

    def load_state_dict(self, state: dict) -> None:
        self.global_state = state["global_state"]
