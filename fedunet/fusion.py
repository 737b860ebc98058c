"""How the additive U-Net reaches the classifier: the *fusion reading*.

The paper says only that "the decoder reconstructs feature maps fused with the backbone's
output by addition or concatenation".  A reading has three orthogonal parts, each an option:

* ``source`` (``model.fusion_source``), what of the U-Net is read:
  ``decoder``: the decoder output (``d/16`` channels at input resolution);
  ``bottleneck``: the shared bottleneck's output ``z`` (``d`` channels), so the averaged
  block feeds the classifier directly; ``multiscale``: every decoder level (``d/2, d/4,
  d/8, d/16`` channels).
* ``head`` (``model.fusion_head``), the local map from the source to the backbone's
  feature width: ``linear`` average-pools each map and projects the concatenated vector
  linearly (with ``decoder`` the U-Net reaches the logits through only ``d/16`` numbers);
  ``conv`` applies a 3x3 conv-BN-ReLU to the feature width on each map, then pools (and
  sums over levels), so the U-Net path has real non-linear capacity of its own.
* ``mode`` (``model.fusion``): ``add`` sums the U-Net vector with the backbone's
  features (the classifier input keeps its width), ``concat`` appends it (doubles it).

Every part of a reading stays local except what lies under ``unet.bottleneck.``.

For diagnostics, ``ablate`` zeroes one path at the classifier input (``"unet"``: backbone
alone; ``"backbone"``: U-Net alone), and ``norms`` (when set to a list) collects the
summed L2 norms of both paths' contributions, without a host sync per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FUSION_MODES = ("add", "concat")
FUSION_SOURCES = ("decoder", "bottleneck", "multiscale")
FUSION_HEADS = ("linear", "conv")
ABLATIONS = (None, "unet", "backbone")


def source_channels(source: str, d: int) -> list[int]:
    """Channels of each map a source reads from a U-Net of bottleneck width ``d``."""
    if source == "decoder":
        return [d // 16]
    if source == "bottleneck":
        return [d]
    return [d // 2, d // 4, d // 8, d // 16]


class ConvHead(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU to ``out_dim`` channels, then global average pooling."""

    def __init__(self, in_channels: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x))).mean(dim=(2, 3))


class Fusion(nn.Module):
    def __init__(self, mode: str, unet_d: int, feature_dim: int, source: str = "decoder", head: str = "linear"):
        super().__init__()
        for field, value, allowed in (
            ("model.fusion", mode, FUSION_MODES),
            ("model.fusion_source", source, FUSION_SOURCES),
            ("model.fusion_head", head, FUSION_HEADS),
        ):
            if value not in allowed:
                raise ValueError(f"{field}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        self.mode, self.source, self.head = mode, source, head
        channels = source_channels(source, unet_d)
        if head == "linear":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.project = nn.Linear(sum(channels), feature_dim)
        else:
            self.heads = nn.ModuleList(ConvHead(c, feature_dim) for c in channels)
        self.out_dim = feature_dim if mode == "add" else 2 * feature_dim
        self.ablate: str | None = None
        self.norms: list[Tensor] | None = None

    def unet_vector(self, maps: list[Tensor]) -> Tensor:
        """The U-Net's contribution at the classifier input (before add or concat)."""
        if self.head == "linear":
            return self.project(torch.cat([self.pool(m).flatten(1) for m in maps], dim=1))
        out = self.heads[0](maps[0])
        for head, m in zip(self.heads[1:], maps[1:]):
            out = out + head(m)
        return out

    def forward(self, features: Tensor, maps: Tensor | list[Tensor]) -> Tensor:
        u = self.unet_vector([maps] if isinstance(maps, Tensor) else maps)
        features, u = diagnose(self, features, u)
        if self.mode == "add":
            return features + u
        return torch.cat([features, u], dim=1)


def diagnose(fusion: nn.Module, features: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Both paths at the classifier input as ``fusion``'s diagnostics want them: their L2 norms over
    channels (dim 1) summed into ``fusion.norms`` when it is a list, and the ablated path zeroed
    (``fusion.ablate``).  Shared by this fusion and the per-pixel one (``fedunet.segmodel``)."""
    if fusion.norms is not None:
        fusion.norms.append(torch.stack([features.detach().float().norm(dim=1).sum(), u.detach().float().norm(dim=1).sum()]))
    if fusion.ablate == "unet":
        u = torch.zeros_like(u)
    elif fusion.ablate == "backbone":
        features = torch.zeros_like(features)
    return features, u
