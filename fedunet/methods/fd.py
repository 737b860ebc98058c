"""FD, federated distillation (Jeong et al., 2018, "Communication-Efficient On-Device Machine
Learning: Federated Distillation and Augmentation under Non-IID Private Data", arXiv 1811.11479).

Clients share no weights: each uploads, per class, the mean of its model's logits over the
round's training batches; the server averages them per class over the clients that hold the
class; each client then trains with CE + lamda * CE(logits, softmax(global logit of the
sample's class)), summed over the samples whose class has a global logit and divided by the
batch size.  Models may differ freely (only C-dimensional logits are exchanged).
``target: logits`` is HtFLlib's version: the *raw* global logits are the cross-entropy
target (not a distribution: the term is unbounded below and its minimizer runs off to
infinity), and a sample whose class has no global logit takes its own detached logits.
Sent up: C x C mean logits and C class counts; down: C x C global logits and C counts.
Defaults: lamda = 1 (HtFLlib), target softmax.
"""

import torch
import torch.nn.functional as F

from fedunet.methods import register
from fedunet.methods.base import Method, Upload, receive_per_class
from fedunet.serialization import PayloadError


@register
class FedDistill(Method):
    name = "fd"
    attach_unet = False
    options = {
        "lamda": {"type": "number", "minimum": 0, "default": 1.0, "description": "weight of the distillation term"},
        "target": {
            "enum": ["softmax", "logits"],
            "default": "softmax",
            "description": "CE target: softmax of the global logits (a distribution) or the raw logits (HtFLlib)",
        },
    }

    def setup(self, clients):
        c0 = clients[0]
        self.num_classes = c = c0.model.classifier.out_features
        for client in clients:
            dev = client.device
            client.state.update(
                logit_sums=torch.zeros(c, c, device=dev),
                logit_counts=torch.zeros(c, dtype=torch.int64, device=dev),
                global_logits=torch.zeros(c, c, device=dev),
                present=torch.zeros(c, dtype=torch.bool, device=dev),
                any_present=False,  # on the host: read once per round, not at every step
            )
        template = {"logits": torch.zeros(c, c), "counts": torch.zeros(c, dtype=torch.int64)}
        self.spec = self.payload_spec(template)
        return None

    def loss(self, client, x, y):
        logits = client.logits(x)
        loss = F.cross_entropy(logits, y)
        st = client.state
        st["logit_sums"].index_add_(0, y, logits.detach().float())  # for this round's upload
        st["logit_counts"] += torch.bincount(y, minlength=self.num_classes)
        if not st["any_present"]:  # no global logits yet (round 1): CE alone, as in HtFLlib
            return loss
        have = st["present"][y]
        if self.hp["target"] == "logits":
            target = torch.where(have.unsqueeze(1), st["global_logits"][y], logits.detach().float())
            soft_ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
        else:  # samples whose class has no global logit add nothing (masked, not selected: no host sync)
            target = F.softmax(st["global_logits"][y], dim=1)
            per_sample = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
            soft_ce = torch.where(have, per_sample, torch.zeros_like(per_sample)).sum() / len(y)
        return loss + self.hp["lamda"] * soft_ce

    def upload_spec(self, client):
        return self.spec

    def begin_round(self, client, round_):
        client.state["logit_sums"].zero_()  # the logits of this round's training, for its upload
        client.state["logit_counts"].zero_()

    def upload(self, client, round_):
        st = client.state
        counts = st["logit_counts"].clone()
        means = st["logit_sums"] / counts.clamp(min=1).unsqueeze(1)
        return {"logits": means.cpu(), "counts": counts.cpu()}

    def check_upload(self, client, tensors):
        if bool((tensors["counts"] < 0).any()):
            raise PayloadError("tensor 'counts' has negative entries")

    def aggregate(self, round_, uploads: list[Upload]):
        logits = torch.stack([u.tensors["logits"].float() for u in uploads])  # clients x C x C
        have = torch.stack([u.tensors["counts"] > 0 for u in uploads]).float()  # clients x C
        clients_per_class = have.sum(0)
        mean = (logits * have.unsqueeze(2)).sum(0) / clients_per_class.clamp(min=1).unsqueeze(1)
        counts = torch.stack([u.tensors["counts"] for u in uploads]).sum(0)
        return {"logits": mean, "counts": counts}, {}

    def download(self, client, message):
        receive_per_class(client, "global_logits", message["logits"], message["counts"] > 0)
