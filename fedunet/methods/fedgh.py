"""FedGH (Yi et al., 2023, "FedGH: Heterogeneous Federated Learning with Generalized Global
Header", ACM Multimedia).

Clients upload the class prototypes of their trained models (common width
``model.feature_width``); the server trains a global header ``Linear(K, C)`` on the
(prototype, class) pairs with cross-entropy and sends it back, replacing every client's
head.  Local training is plain CE.  The header starts from client 0's head.
Sent up: C x K prototypes and C counts; down: the header, C x K + C floats.
Defaults: server SGD lr 0.01, 1 epoch per round, batch = training.batch_size (HtFLlib's benchmark).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fedunet.methods import register
from fedunet.methods.aggregate import as_sent, train_on_prototypes, uploaded_prototypes
from fedunet.methods.base import PrototypeMethod, Upload


@register
class FedGH(PrototypeMethod):
    name = "fedgh"
    options = {
        "server_lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.01},
        "server_epochs": {"type": "integer", "minimum": 1, "default": 1},
    }

    def setup(self, clients):
        super().setup(clients)
        head = clients[0].model.classifier
        self.header = nn.Linear(head.in_features, head.out_features)
        self.header.load_state_dict({k: v.detach().cpu() for k, v in head.state_dict().items()})
        self.generator = torch.Generator().manual_seed(self.cfg["seed"])
        return self.message()

    def message(self):
        """The header as sent; the server keeps the values the clients decode (fp16/bf16 payloads)."""
        header = {k: v.detach().clone() for k, v in self.header.state_dict().items()}
        sent = as_sent(header, self.cfg["federated"]["payload_dtype"])
        self.header.load_state_dict(sent)
        return sent

    def aggregate(self, round_, uploads: list[Upload]):
        protos, labels = uploaded_prototypes(uploads)
        train_on_prototypes(
            self.header.parameters(),
            lambda p, y: F.cross_entropy(self.header(p), y),
            protos,
            labels,
            self.hp["server_lr"],
            self.hp["server_epochs"],
            self.cfg["training"]["batch_size"],
            self.generator,
        )
        return self.message(), {"prototypes": len(labels)}

    def download(self, client, message):
        client.model.classifier.load_state_dict({k: v.to(client.device) for k, v in message.items()})

    def state_dict(self):
        return {"header": self.header.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.header.load_state_dict(state["header"])
        self.generator.set_state(state["generator"])
