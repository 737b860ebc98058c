"""FedProto (Tan et al., 2022, "FedProto: Federated Prototype Learning across Heterogeneous
Clients", AAAI).

Clients exchange class prototypes instead of weights: after local training each client
uploads the mean feature (at the common width ``model.feature_width``) of each class it
holds; the server averages them per class, weighted by the clients' sample counts of that
class (the paper's aggregation); each client then trains with
CE + lamda * MSE(feature, global prototype of its class).  Classification by the local head
(``inference: prototype`` classifies by the nearest global prototype instead, as the paper).
Sent up: C x K prototypes and C counts; down: C x K global prototypes and C counts.
Defaults: lamda = 10 (HtFLlib's benchmark).
"""

import torch

from fedunet.methods import register
from fedunet.methods.base import PrototypeMethod, Upload


@register
class FedProto(PrototypeMethod):
    name = "fedproto"
    options = {
        "lamda": {"type": "number", "minimum": 0, "default": 10.0, "description": "weight of the prototype regularizer"},
        "inference": {
            "enum": ["head", "prototype"],
            "default": "head",
            "description": "classify by local head or nearest prototype",
        },
    }

    def loss(self, client, x, y):
        return self.prototype_regularized_loss(client, x, y)

    def aggregate(self, uploads: list[Upload]):
        protos = torch.stack([u.tensors["protos"].float() for u in uploads])  # clients x C x K
        counts = torch.stack([u.tensors["counts"] for u in uploads])  # clients x C
        total = counts.sum(0)
        weights = counts.float() / total.clamp(min=1).float()
        return {"protos": (protos * weights.unsqueeze(2)).sum(0), "counts": total}

    def download(self, client, message):
        client.state["protos"] = message["protos"].float().to(client.device)
        client.state["present"] = (message["counts"] > 0).to(client.device)
