"""FedKD (Wu et al., 2022, "Communication-efficient federated learning via knowledge
distillation", Nature Communications 13, 2032).

Each client trains its private model (the mentor, which is evaluated) together with a small
shared mentee by adaptive mutual distillation: with s = CE(mentor) + CE(mentee) (a constant
weight, as in the paper), the two losses are
    mentor: CE + [KL(mentor || mentee) + MSE(H_mentor, W_h H_mentee)] / s
    mentee: CE + [KL(mentee || mentor) + MSE(H_mentor, W_h H_mentee)] / s
where H are the models' features (the mentor's at ``model.feature_width``) and W_h is a local
bias-free linear map.  Only the mentee is shared, and its *update* is compressed: every weight
matrix (conv kernels flattened to out x rest) is factorized by SVD and truncated to the fewest
singular values whose energy reaches T; T rises linearly over the rounds from
``energy_start`` to ``energy_end``.  The server averages the reconstructed updates (sample-
weighted), compresses the average the same way and sends it; server and clients apply the
same reconstructed update, so every mentee copy stays identical.
Sent up and down: the factors (U: m x k, S: k, V: k x n) of each matrix, raw vectors for
biases and BatchNorm parameters, integer buffers as values.  Bytes are what is sent.
Defaults: mentee = the small CNN, T from 0.95 to 0.98 (the paper's and HtFLlib's).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fedunet import models
from fedunet.methods import register
from fedunet.methods.base import Method, Upload
from fedunet.methods.fml import attach_small_model, kl
from fedunet.serialization import PayloadError, PayloadSpec


def svd_compress(matrix: torch.Tensor, energy: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fewest singular triplets whose squared singular values reach ``energy`` of the total."""
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    power = s**2
    total = float(power.sum())
    k = 1 if total == 0 else int((torch.cumsum(power, 0) / total < energy).sum()) + 1
    k = min(k, len(s))
    return u[:, :k].contiguous(), s[:k].contiguous(), vh[:k].contiguous()


@register
class FedKD(Method):
    name = "fedkd"
    attach_unet = False
    needs_projection = True
    options = {
        "mentee": {"enum": models.available(), "default": "cnn", "description": "architecture of the shared mentee"},
        "energy_start": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.95},
        "energy_end": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.98},
    }

    # ------------------------------------------------------------ setup and protocol

    def setup(self, clients):
        for c in clients:
            mentee = attach_small_model(c, "mentee", self.hp["mentee"])
            c.attach("hidden_map", nn.Linear(mentee.feature_dim, c.model.feature_dim, bias=False))
        self.global_state = {k: v.detach().cpu().clone() for k, v in clients[0].aux["mentee"].state_dict().items()}
        shapes, dtypes, template = {}, {}, {}
        wire = self.cfg["federated"]["payload_dtype"]
        for name, t in self.global_state.items():
            if not t.is_floating_point():
                shapes[f"{name}.value"], dtypes[f"{name}.value"] = tuple(t.shape), "int64"
            elif t.ndim >= 2:
                m, n = t.shape[0], t[0].numel()
                for part, shape in (("U", (m, None)), ("S", (None,)), ("V", (None, n))):
                    shapes[f"{name}.{part}"], dtypes[f"{name}.{part}"] = shape, wire
                template[name] = t
            else:
                shapes[f"{name}.raw"], dtypes[f"{name}.raw"] = tuple(t.shape), wire
            template.setdefault(name, t)
        self.spec = PayloadSpec(shapes, dtypes, max_bytes=self.max_bytes(template))
        return {f"full.{k}": v for k, v in self.global_state.items()}  # everyone starts from client 0's mentee

    def energy(self) -> float:
        start, end = self.hp["energy_start"], self.hp["energy_end"]
        return start + (getattr(self, "round", 1) / self.cfg["federated"]["rounds"]) * (end - start)

    def compress(self, update: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, energy = {}, self.energy()
        for name, t in update.items():
            if not t.is_floating_point():
                out[f"{name}.value"] = t
            elif t.ndim >= 2:
                u, s, v = svd_compress(t.reshape(t.shape[0], -1), energy)
                out[f"{name}.U"], out[f"{name}.S"], out[f"{name}.V"] = u, s, v
            else:
                out[f"{name}.raw"] = t.float()
        return out

    def decompress(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, ref in self.global_state.items():
            if not ref.is_floating_point():
                out[name] = payload[f"{name}.value"].to(ref.dtype)
            elif ref.ndim >= 2:
                u, s, v = (payload[f"{name}.{p}"].float() for p in "USV")
                out[name] = ((u * s) @ v).reshape(ref.shape)
            else:
                out[name] = payload[f"{name}.raw"].float()
        return out

    def apply(self, state: dict[str, torch.Tensor], update: dict[str, torch.Tensor]) -> None:
        """Add a float update in place; integer buffers take the sent value."""
        with torch.no_grad():
            for name, t in state.items():
                u = update[name].to(t.device)
                t.copy_(t + u.to(t.dtype) if t.is_floating_point() else u)

    def upload_spec(self, client):
        return self.spec

    def check_upload(self, client, tensors):
        for name, ref in self.global_state.items():
            if ref.is_floating_point() and ref.ndim >= 2:
                k = tensors[f"{name}.S"].shape[0]
                if (
                    tensors[f"{name}.U"].shape[1] != k
                    or tensors[f"{name}.V"].shape[0] != k
                    or not 1 <= k <= min(ref.shape[0], ref[0].numel())
                ):
                    raise PayloadError(f"tensor {name!r}: inconsistent SVD factor ranks")

    def upload(self, client):
        """The compressed change of the mentee since the global mentee the client last received."""
        mentee = client.aux["mentee"].state_dict()
        update = {}
        for name, t in mentee.items():
            base = client.state[f"base:{name}"]
            update[name] = (t.detach().float() - base.float()).cpu() if t.is_floating_point() else t.detach().cpu()
        return self.compress(update)

    def aggregate(self, uploads: list[Upload]):
        total = sum(u.weight for u in uploads)
        updates = [(u.weight / total, self.decompress(u.tensors)) for u in uploads]
        mean = {}
        for name, ref in self.global_state.items():
            acc = sum(w * up[name].float() for w, up in updates)
            mean[name] = acc if ref.is_floating_point() else acc.round().to(ref.dtype)
        message = self.compress(mean)
        self.apply(self.global_state, self.decompress(message))
        return message

    def download(self, client, message):
        """New global mentee = the last one received + the decompressed aggregated update."""
        mentee = client.aux["mentee"].state_dict()
        if any(k.startswith("full.") for k in message):
            new = {name: message[f"full.{name}"] for name in mentee}
        else:
            update = self.decompress(message)
            new = {}
            for name in mentee:
                base = client.state[f"base:{name}"]
                new[name] = base + update[name].to(base.device, base.dtype) if base.is_floating_point() else update[name]
        with torch.no_grad():
            for name, t in mentee.items():
                t.copy_(new[name])
                client.state[f"base:{name}"] = t.detach().clone()

    # ------------------------------------------------------------ local objective

    def loss(self, client, x, y):
        mentor, mentee, hidden_map = client.model, client.aux["mentee"], client.aux["hidden_map"]
        h_t, h_s = mentor.features(x), mentee.features(x)
        out_t, out_s = mentor.classifier(h_t), mentee.classifier(h_s)
        ce_t, ce_s = F.cross_entropy(out_t, y), F.cross_entropy(out_s, y)
        scale = (ce_t + ce_s).detach()
        hidden = F.mse_loss(hidden_map(h_s).float(), h_t.float())
        return ce_t + ce_s + (kl(out_t, out_s) + kl(out_s, out_t) + 2 * hidden) / scale

    def state_dict(self):
        return {"global_state": self.global_state}

    def load_state_dict(self, state):
        self.global_state = state["global_state"]
