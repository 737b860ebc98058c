"""FedProto (Tan et al., 2022, "FedProto: Federated Prototype Learning across Heterogeneous
Clients", AAAI).

Clients exchange class prototypes instead of weights: each client uploads the mean feature
(at the common width ``model.feature_width``) of each class it holds; the server averages
them per class, weighted by the clients' sample counts of that class (the paper's
aggregation; ``aggregation: mean`` is the unweighted mean of HtFLlib and the official code);
each client then trains with CE + lamda * MSE(feature, global prototype of its class), and
classifies by the nearest global prototype (the paper's and HtFLlib's inference;
``inference: head`` uses the local head).  The prototypes are the class means of the trained
model in eval mode (``prototypes: during``: the train-mode features of every step of the
round, as HtFLlib and the official code collect them).
Sent up: C x K prototypes and C counts; down: C x K global prototypes and C counts.
Defaults: lamda = 1 (the official code's; HtFLlib's benchmark uses 10, tuned for plain SGD,
which diverges under momentum 0.9: see the README's deviations section).
"""

import torch

from fedunet.methods import register
from fedunet.methods.base import PrototypeMethod, Upload


@register
class FedProto(PrototypeMethod):
    name = "fedproto"
    options = {
        "lamda": {"type": "number", "minimum": 0, "default": 1.0, "description": "weight of the prototype regularizer"},
        "inference": {
            "enum": ["prototype", "head"],
            "default": "prototype",
            "description": "classify by the nearest global prototype (paper, HtFLlib) or by the local head",
        },
        "aggregation": {
            "enum": ["weighted", "mean"],
            "default": "weighted",
            "description": "global prototype: class-count-weighted mean (paper) or unweighted mean over clients (HtFLlib)",
        },
        "prototypes": {
            "enum": ["after", "during"],
            "default": "after",
            "description": "class means after local training, eval mode (paper) or of the train-mode features of every "
            "step (HtFLlib)",
        },
    }

    def loss(self, client, x, y):
        return self.prototype_regularized_loss(client, x, y)

    def aggregate(self, round_, uploads: list[Upload]):
        protos = torch.stack([u.tensors["protos"].float() for u in uploads])  # clients x C x K
        counts = torch.stack([u.tensors["counts"] for u in uploads])  # clients x C
        total = counts.sum(0)
        if self.hp["aggregation"] == "mean":
            have = (counts > 0).float()
            weights = have / have.sum(0).clamp(min=1)
        else:
            weights = counts.float() / total.clamp(min=1).float()
        return {"protos": (protos * weights.unsqueeze(2)).sum(0), "counts": total}, {}

    def download(self, client, message):
        self.receive_prototypes(client, message["protos"], message["counts"] > 0)
