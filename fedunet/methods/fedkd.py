"""FedKD (Wu et al., 2022, "Communication-efficient federated learning via knowledge
distillation", Nature Communications 13, 2032).

Each client trains its private model (the mentor, which is evaluated) together with a small
shared mentee by adaptive mutual distillation: with s = CE(mentor) + CE(mentee), the two
losses are
    mentor: CE + [KL(p_mentee || p_mentor) + MSE(H_mentor, W_h H_mentee)] / s
    mentee: CE + [KL(p_mentor || p_mentee) + MSE(H_mentor, W_h H_mentee)] / s
where H are the models' features (the mentor's at ``model.feature_width``) and W_h is a local
bias-free linear map (512 x 512 with the default mentee).  By default each loss trains only
its own model (and W_h): the other model's prediction and features are fixed targets and s
is a constant weight; ``gradients: both`` differentiates everything, s included, through
both models (HtFLlib).  KL per sample, summed over classes, averaged over the batch
(``kl_reduction: mean``: also over classes, HtFLlib's ``nn.KLDivLoss()``).
``clip_grad_norm`` clips each of mentor, mentee and W_h before every step (HtFLlib: 10).

Only the mentee is shared, SVD-compressed.  By default what is compressed is its *update*
since the last global mentee (the paper's gradients, the official code); ``compress:
parameters`` compresses the parameters themselves (HtFLlib).  Every weight matrix is
factorized and truncated to the fewest singular values whose energy (sum of squares) reaches
T (``rank_rule: htfllib``: HtFLlib's loop, which sends rank 0, i.e. zeros, when only the full
rank reaches T); conv kernels are flattened to out x (in*kh*kw) (``svd: per_kernel``: one SVD
per kh x kw kernel with a rank common to the tensor, HtFLlib's ``np.linalg.svd`` on 4-D arrays).  T
rises linearly from ``energy_start`` to ``energy_end``: T = start + r / R * (end - start) in
round r of R = ``energy_rounds`` (null: the run's rounds), as the official code; HtFLlib
uses round r - 1 (``energy_schedule: htfllib``) over its 2000 rounds.  The server averages
the reconstructed tensors (sample-weighted; ``aggregation: mean``: unweighted, HtFLlib),
compresses the average the same way and sends it; server and clients apply the same
reconstructed message, so every mentee copy stays identical.
Sent up and down: the factors (U, S, V) of each matrix, raw vectors for biases and
BatchNorm parameters, integer buffers as values.  Bytes are what is sent.
Defaults: mentee = the FedAvg-paper CNN (HtFLlib: client 0's architecture, ``mentee:
client0``), T from 0.95 to 0.98 (the paper's and HtFLlib's).
"""

import torch
import torch.nn.functional as F
from torch import nn

from fedunet import models
from fedunet.methods import register
from fedunet.methods.aggregate import as_sent, reweighted
from fedunet.methods.base import Method, Upload, clip_gradients
from fedunet.methods.fml import AGGREGATION, CLIENT0, CLIP, GRADIENTS, KL_REDUCTION, attach_small_model, kl, small_architecture
from fedunet.serialization import PayloadError, PayloadSpec


def energy_rank(power: torch.Tensor, energy: float, rule: str = "energy") -> int:
    """How many leading components of ``power`` (squared singular values, descending) to keep.

    ``energy``: the fewest whose sum reaches ``energy`` of the total (1 when the total is zero).
    ``htfllib``: HtFLlib's loop, the fewest n < len(power) whose sum *exceeds* ``energy`` of the
    total, and 0 when only the full rank would: the tensor then arrives as zeros (at
    initialization a 10 x 512 head needs all 10 singular values for 0.95, so HtFLlib zeroes it).
    """
    total = float(power.sum())
    if total == 0:
        return 1
    cumulative = torch.cumsum(power, 0)
    if rule == "htfllib":
        hits = torch.nonzero(cumulative[:-1] > energy * total).flatten()
        return int(hits[0]) + 1 if len(hits) else 0
    return min(int((cumulative / total < energy).sum()) + 1, len(power))


def svd_compress(matrix: torch.Tensor, energy: float, rule: str = "energy") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fewest singular triplets whose squared singular values reach ``energy`` of the total."""
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    k = energy_rank(s**2, energy, rule)
    return u[:, :k].contiguous(), s[:k].contiguous(), vh[:k].contiguous()


def svd_compress_kernels(
    weight: torch.Tensor, energy: float, rule: str = "energy"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SVD per kh x kw kernel of a conv weight (out, in, kh, kw), truncated to the rank k common
    to all kernels at which the squared singular values, summed over every kernel, reach ``energy``
    of the total.  Returns U (out, in, kh, k), S (out, in, k), V (out, in, k, kw)."""
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    k = energy_rank((s**2).sum(dim=(0, 1)), energy, rule)
    return u[..., :k].contiguous(), s[..., :k].contiguous(), vh[..., :k, :].contiguous()


@register
class FedKD(Method):
    name = "fedkd"
    attach_unet = False
    needs_projection = True
    options = {
        "mentee": {
            "enum": [*models.available(), CLIENT0],
            "default": "fedavg-cnn",
            "description": "architecture of the shared mentee (client0: client 0's architecture, as HtFLlib)",
        },
        "energy_start": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.95},
        "energy_end": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.98},
        "energy_rounds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "rounds over which the energy rises (null: federated.rounds; HtFLlib: its 2000 rounds)",
        },
        "energy_schedule": {
            "enum": ["official", "htfllib"],
            "default": "official",
            "description": "energy of round r: start + r/R (end - start) (official code) or start + (r-1)/R (end - start) "
            "(HtFLlib)",
        },
        "compress": {
            "enum": ["update", "parameters"],
            "default": "update",
            "description": "what is SVD-compressed: the mentee's change since the last global mentee (paper) or its "
            "parameters (HtFLlib)",
        },
        "svd": {
            "enum": ["flattened", "per_kernel"],
            "default": "flattened",
            "description": "conv weights: one SVD of out x (in*kh*kw), or one per kh x kw kernel with a common rank (HtFLlib)",
        },
        "rank_rule": {
            "enum": ["energy", "htfllib"],
            "default": "energy",
            "description": "fewest singular values reaching the energy, or HtFLlib's loop (rank 0, a zero tensor, when only "
            "the full rank would)",
        },
        "kl_reduction": KL_REDUCTION,
        "gradients": GRADIENTS,
        "clip_grad_norm": CLIP,
        "aggregation": AGGREGATION,
    }

    # ------------------------------------------------------------ setup and protocol

    def setup(self, clients):
        arch = small_architecture(self.hp["mentee"], clients)
        for c in clients:
            mentee = attach_small_model(c, "mentee", arch)
            hidden_map = c.attach("hidden_map", nn.Linear(mentee.feature_dim, c.model.feature_dim, bias=False))
            clip_gradients(c, [c.model, mentee, hidden_map], self.hp["clip_grad_norm"])
        self.global_state = {k: v.detach().cpu().clone() for k, v in clients[0].aux["mentee"].state_dict().items()}
        shapes, dtypes, template = {}, {}, {}
        wire = self.cfg["federated"]["payload_dtype"]
        for name, t in self.global_state.items():
            if not t.is_floating_point():
                shapes[f"{name}.value"], dtypes[f"{name}.value"] = tuple(t.shape), "int64"
            elif self.per_kernel(t):
                o, i, kh, kw = t.shape
                for part, shape in (("U", (o, i, kh, None)), ("S", (o, i, None)), ("V", (o, i, None, kw))):
                    shapes[f"{name}.{part}"], dtypes[f"{name}.{part}"] = shape, wire
                template[name] = torch.zeros(o, i, kh + 1 + kw, min(kh, kw))  # the largest factors
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

    def per_kernel(self, t: torch.Tensor) -> bool:
        return self.hp["svd"] == "per_kernel" and t.is_floating_point() and t.ndim == 4

    def energy(self, round_: int) -> float:
        """The energy T the factors keep in round ``round_``."""
        start, end = self.hp["energy_start"], self.hp["energy_end"]
        rounds = self.hp["energy_rounds"] or self.cfg["federated"]["rounds"]
        step = round_ - (1 if self.hp["energy_schedule"] == "htfllib" else 0)
        return start + min(step / rounds, 1.0) * (end - start)

    def compress(self, tensors: dict[str, torch.Tensor], round_: int) -> dict[str, torch.Tensor]:
        out, energy, rule = {}, self.energy(round_), self.hp["rank_rule"]
        for name, t in tensors.items():
            if not t.is_floating_point():
                out[f"{name}.value"] = t
            elif self.per_kernel(t):
                out[f"{name}.U"], out[f"{name}.S"], out[f"{name}.V"] = svd_compress_kernels(t, energy, rule)
            elif t.ndim >= 2:
                u, s, v = svd_compress(t.reshape(t.shape[0], -1), energy, rule)
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
                out[name] = ((u * s.unsqueeze(-2)) @ v).reshape(ref.shape)
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
                u, s, v = (tensors[f"{name}.{p}"] for p in "USV")
                k = s.shape[-1]
                most = min(ref.shape[-2:]) if self.per_kernel(ref) else min(ref.shape[0], ref[0].numel())
                least = 0 if self.hp["rank_rule"] == "htfllib" else 1
                if u.shape[-1] != k or v.shape[-2] != k or not least <= k <= most:
                    raise PayloadError(f"tensor {name!r}: inconsistent SVD factor ranks")

    def upload(self, client, round_):
        """The compressed mentee: its change since the global mentee it last received (``update``),
        or its parameters (``parameters``)."""
        mentee = client.aux["mentee"].state_dict()
        if self.hp["compress"] == "parameters":
            return self.compress({name: t.detach().cpu() for name, t in mentee.items()}, round_)
        update = {}
        for name, t in mentee.items():
            base = client.state[f"base:{name}"]
            update[name] = (t.detach().float() - base.float()).cpu() if t.is_floating_point() else t.detach().cpu()
        return self.compress(update, round_)

    def aggregate(self, round_, uploads: list[Upload]):
        """The compressed mean of the reconstructed uploads; numbers: the round's energy and the mean
        rank of the message's factored tensors."""
        uploads = reweighted(uploads, self.hp["aggregation"])
        total = sum(u.weight for u in uploads)
        decoded = [(u.weight / total, self.decompress(u.tensors)) for u in uploads]
        mean = {}
        for name, ref in self.global_state.items():
            acc = sum(w * up[name].float() for w, up in decoded)
            mean[name] = acc if ref.is_floating_point() else acc.round().to(ref.dtype)
        message = self.compress(mean, round_)
        received = self.decompress(as_sent(message, self.cfg["federated"]["payload_dtype"]))
        if self.hp["compress"] == "parameters":
            self.global_state = received
        else:
            self.apply(self.global_state, received)
        ranks = [t.shape[-1] for name, t in message.items() if name.endswith(".S")]
        return message, {"energy": self.energy(round_), "rank_mean": sum(ranks) / len(ranks) if ranks else 0.0}

    def download(self, client, message):
        """New global mentee: the decompressed message (``parameters``), or the last one received
        plus the decompressed aggregated update (``update``)."""
        mentee = client.aux["mentee"].state_dict()
        if any(k.startswith("full.") for k in message):
            new = {name: message[f"full.{name}"] for name in mentee}
        elif self.hp["compress"] == "parameters":
            new = self.decompress(message)
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
        reduction = self.hp["kl_reduction"]
        if self.hp["gradients"] == "both":  # HtFLlib: nothing detached, s differentiated too
            scale = ce_t + ce_s
            hidden = F.mse_loss(h_t.float(), hidden_map(h_s).float())
            distill = kl(out_t, out_s, reduction, detach=False) + kl(out_s, out_t, reduction, detach=False) + 2 * hidden
            return ce_t + ce_s + distill / scale
        scale = (ce_t + ce_s).detach()
        hidden_t = F.mse_loss(h_t.float(), hidden_map(h_s.detach()).float())  # trains the mentor and W_h
        hidden_s = F.mse_loss(h_t.detach().float(), hidden_map(h_s).float())  # trains the mentee and W_h
        distill = kl(out_t, out_s, reduction) + kl(out_s, out_t, reduction) + hidden_t + hidden_s
        return ce_t + ce_s + distill / scale

    def state_dict(self):
        return {"global_state": self.global_state}

    def load_state_dict(self, state):
        self.global_state = state["global_state"]
