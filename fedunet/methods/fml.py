"""FML, federated mutual learning (Shen et al., 2020, "Federated Mutual Learning", arXiv 2006.16765).

Each client trains its private (heterogeneous) model together with a small shared "meme"
model by deep mutual learning; only the meme is FedAvg-ed:
    private: alpha * CE + (1 - alpha) * KL(p_meme || p_private)
    meme:    beta  * CE + (1 - beta)  * KL(p_private || p_meme)
KL per sample, summed over classes, averaged over the batch (``kl_reduction: mean``, HtFLlib's
``nn.KLDivLoss()``, also divides by the number of classes).  By default each loss trains only
its own model (the other model's prediction is a fixed target, as in deep mutual learning);
``gradients: both`` lets both losses reach both models (HtFLlib).  ``clip_grad_norm`` clips
each model's gradient norm before every step (HtFLlib: 10).  The server averages the memes
weighted by samples (``aggregation: mean``: unweighted, HtFLlib).  The private model is the
one evaluated.  Sent each round, each way: the meme model's state.
Defaults: alpha = beta = 0.5 (HtFLlib's benchmark); meme = the FedAvg-paper CNN (HtFLlib's
meme is client 0's architecture, the FedAvg CNN in its image benchmarks; ``meme: client0``).
"""

import torch.nn.functional as F

from fedunet import models
from fedunet.methods import register
from fedunet.methods.aggregate import reweighted, weighted_mean
from fedunet.methods.base import StateSharing, clip_gradients
from fedunet.model import ClientModel, ModelSpec, select_state

# common options of the methods that train a shared small model beside the private one
CLIENT0 = "client0"
KL_REDUCTION = {
    "enum": ["batchmean", "mean"],
    "default": "batchmean",
    "description": "KL summed over classes and averaged over samples (the KL divergence), or averaged over both (HtFLlib)",
}
GRADIENTS = {
    "enum": ["own", "both"],
    "default": "own",
    "description": "each model's loss trains only that model (paper) or both losses reach both models (HtFLlib)",
}
CLIP = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "default": None,
    "description": "clip each model's gradient norm to this before every step (HtFLlib: 10); null: no clipping",
}
AGGREGATION = {
    "enum": ["weighted", "mean"],
    "default": "weighted",
    "description": "server mean weighted by client samples (FedAvg) or unweighted (HtFLlib)",
}


def kl(student_logits, teacher_logits, reduction: str = "batchmean", detach: bool = True):
    """KL(p_teacher || p_student) as a loss for the student; with ``detach`` the teacher is a fixed target.

    ``batchmean``: summed over classes, averaged over samples; ``mean``: averaged over both
    (what ``nn.KLDivLoss()`` computes in PyTorch 2.x, written out since PyTorch announces it
    will change that reduction).
    """
    teacher = teacher_logits.detach() if detach else teacher_logits
    log_p, q = F.log_softmax(student_logits.float(), 1), F.softmax(teacher.float(), 1)
    if reduction == "mean":
        return F.kl_div(log_p, q, reduction="sum") / log_p.numel()
    return F.kl_div(log_p, q, reduction=reduction)


def small_architecture(option: str, clients) -> str:
    return clients[0].architecture if option == CLIENT0 else option


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
        "meme": {
            "enum": [*models.available(), CLIENT0],
            "default": "fedavg-cnn",
            "description": "architecture of the shared meme model (client0: client 0's architecture, as HtFLlib)",
        },
        "kl_reduction": KL_REDUCTION,
        "gradients": GRADIENTS,
        "clip_grad_norm": CLIP,
        "aggregation": AGGREGATION,
    }

    def setup(self, clients):
        arch = small_architecture(self.hp["meme"], clients)
        for c in clients:
            meme = attach_small_model(c, "meme", arch)
            clip_gradients(c, [c.model, meme], self.hp["clip_grad_norm"])
        return super().setup(clients)  # the meme of client 0 becomes everyone's start

    def shared(self, client):
        return select_state(client.aux["meme"], "", self.cfg["federated"]["share_buffers"])

    def mean(self, uploads):
        return weighted_mean(reweighted(uploads, self.hp["aggregation"]))

    def loss(self, client, x, y):
        out, out_meme = client.logits(x), client.aux["meme"](x)
        a, b = self.hp["alpha"], self.hp["beta"]
        reduction, own = self.hp["kl_reduction"], self.hp["gradients"] == "own"
        private = a * F.cross_entropy(out, y) + (1 - a) * kl(out, out_meme, reduction, detach=own)
        meme = b * F.cross_entropy(out_meme, y) + (1 - b) * kl(out_meme, out, reduction, detach=own)
        return private + meme
