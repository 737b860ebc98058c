"""FedTGP (Zhang et al., 2024, "FedTGP: Trainable Global Prototypes with Adaptive-Margin-Enhanced
Contrastive Learning for Data and Model Heterogeneity in Federated Learning", AAAI).

Clients upload class prototypes (as FedProto) and train with CE + lamda * MSE(feature, global
prototype).  The server keeps trainable global prototypes, produced by a small generator
(per-class embedding, Linear-ReLU-Linear), and trains it each round with an adaptive-margin
contrastive loss: CE over negative Euclidean distances from each client prototype to every
global prototype, its own class's distance increased by the margin
min(max over classes of the gap to the nearest other class centre, margin_threshold).
Classification by the nearest global prototype (the paper's; ``inference: head`` uses the local head).
Sent up: C x K prototypes and C counts; down: C x K global prototypes.
Defaults: 100 server epochs, margin threshold 100, server lr = optimizer.lr (HtFLlib's benchmark);
lamda 1 (HtFLlib's benchmark uses 10, tuned for plain SGD: under momentum 0.9 the prototype term
grows with the margin and 10 loses accuracy; see the README's deviations section).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fedunet.methods import register
from fedunet.methods.aggregate import train_on_prototypes, uploaded_prototypes
from fedunet.methods.base import PrototypeMethod, Upload


class PrototypeGenerator(nn.Module):
    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, width)
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self) -> torch.Tensor:
        return self.net(self.embedding.weight)


@register
class FedTGP(PrototypeMethod):
    name = "fedtgp"
    options = {
        "lamda": {
            "type": "number",
            "minimum": 0,
            "default": 1.0,
            "description": "weight of the prototype regularizer (HtFLlib: 10)",
        },
        "server_epochs": {"type": "integer", "minimum": 1, "default": 100},
        "margin_threshold": {"type": "number", "minimum": 0, "default": 100.0},
        "inference": {"enum": ["head", "prototype"], "default": "prototype"},
    }

    def setup(self, clients):
        super().setup(clients)
        self.generator_net = PrototypeGenerator(self.num_classes, self.width)
        self.shuffle = torch.Generator().manual_seed(self.cfg["seed"])
        return None

    def loss(self, client, x, y):
        return self.prototype_regularized_loss(client, x, y)

    def margin(self, protos: torch.Tensor, labels: torch.Tensor) -> float:
        centres, present = [], []
        for c in range(self.num_classes):
            mine = protos[labels == c]
            present.append(len(mine) > 0)
            centres.append(mine.mean(0) if len(mine) else torch.zeros(self.width))
        centres = torch.stack(centres)[torch.tensor(present)]
        if len(centres) < 2:
            return 0.0
        dist = torch.cdist(centres, centres)
        dist.fill_diagonal_(float("inf"))
        gap = dist.min(dim=1).values  # each class's distance to its nearest other class
        return min(float(gap.max()), self.hp["margin_threshold"])

    def aggregate(self, round_, uploads: list[Upload]):
        protos, labels = uploaded_prototypes(uploads)
        margin = self.margin(protos, labels)
        net = self.generator_net
        net.train()

        def contrastive(p, y):  # the true class's distance is lengthened by the margin
            dist = torch.cdist(p, net()) + margin * F.one_hot(y, self.num_classes)
            return F.cross_entropy(-dist, y)

        train_on_prototypes(
            net.parameters(),
            contrastive,
            protos,
            labels,
            self.cfg["optimizer"]["lr"],
            self.hp["server_epochs"],
            self.cfg["training"]["batch_size"],
            self.shuffle,
        )
        net.eval()
        with torch.no_grad():
            protos = net().detach().clone()
        return {"protos": protos}, {"margin": margin, "prototypes": len(labels)}

    def download(self, client, message):
        self.receive_prototypes(client, message["protos"], torch.ones(self.num_classes, dtype=torch.bool))

    def state_dict(self):
        return {"generator_net": self.generator_net.state_dict(), "shuffle": self.shuffle.get_state()}

    def load_state_dict(self, state):
        self.generator_net.load_state_dict(state["generator_net"])
        self.shuffle.set_state(state["shuffle"])
