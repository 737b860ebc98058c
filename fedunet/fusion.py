"""How the U-Net's decoder output joins the backbone's features before the classifier.

The decoder output (``B x d/16 x H x W``) is average-pooled to a vector and projected by
a local linear layer to the backbone's feature width.  ``add`` sums it with the
backbone features (the classifier input keeps its width); ``concat`` appends it (the
classifier input doubles).  Both the projection and the classifier stay local.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FUSION_MODES = ("add", "concat")


class Fusion(nn.Module):
    def __init__(self, mode: str, unet_channels: int, feature_dim: int):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; allowed: {', '.join(FUSION_MODES)}")
        self.mode = mode
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = nn.Linear(unet_channels, feature_dim)
        self.out_dim = feature_dim if mode == "add" else 2 * feature_dim

    def forward(self, features: Tensor, unet_out: Tensor) -> Tensor:
        u = self.project(self.pool(unet_out).flatten(1))
        if self.mode == "add":
            return features + u
        return torch.cat([features, u], dim=1)
