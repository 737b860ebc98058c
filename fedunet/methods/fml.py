"""FML, federated mutual learning (Shen et al., 2020, "Federated Mutual Learning", arXiv 2006.16765).

Each client trains its private (heterogeneous) model together with a small shared "meme"
model by deep mutual learning; only the meme is FedAvg-ed:
    private: alpha * CE + (1 - alpha) * KL(private || meme)
    meme:    beta  * CE + (1 - beta)  * KL(meme || private)
(the other model's prediction is the fixed target of each KL term).  The private model is
the one evaluated.  Sent each round, each way: the meme model's state.
Defaults: alpha = beta = 0.5 (HtFLlib's benchmark), meme = the small CNN (as HtFLlib's FedAvgCNN).
"""

import torch.nn.functional as F

from fedunet import models
from fedunet.methods import register
from fedunet.methods.base import StateSharing
from fedunet.model import ClientModel, ModelSpec, select_state


def kl(student_logits, teacher_logits):
    """KL(teacher || student) as a loss for the student; the teacher is a fixed target."""
    return F.kl_div(
        F.log_softmax(student_logits.float(), 1), F.softmax(teacher_logits.detach().float(), 1), reduction="batchmean"
    )


def attach_small_model(client, name: str, architecture: str):
    spec = client.model.spec
    small = ModelSpec(architecture, spec.in_channels, spec.input_size, spec.num_classes, width=spec.width, unet_d=None)
    return client.attach(name, ClientModel(small))


@register
class FML(StateSharing):
    name = "fml"
    attach_unet = False
    options = {
        "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description": "CE weight of the private model"},
        "beta": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description": "CE weight of the meme model"},
        "meme": {"enum": models.available(), "default": "cnn", "description": "architecture of the shared meme model"},
    }

    def setup(self, clients):
        for c in clients:
            attach_small_model(c, "meme", self.hp["meme"])
        return super().setup(clients)  # the meme of client 0 becomes everyone's start

    def shared(self, client):
        return select_state(client.aux["meme"], "", self.cfg["federated"]["share_buffers"])

    def loss(self, client, x, y):
        out, out_meme = client.logits(x), client.aux["meme"](x)
        a, b = self.hp["alpha"], self.hp["beta"]
        private = a * F.cross_entropy(out, y) + (1 - a) * kl(out, out_meme)
        meme = b * F.cross_entropy(out_meme, y) + (1 - b) * kl(out_meme, out)
        return private + meme
