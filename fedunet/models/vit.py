"""Vision Transformer backbones: torchvision's ``VisionTransformer`` without its classification head.

A backbone without a spatial hierarchy: one patch embedding, then pre-norm transformer blocks
at a single token resolution, pooled to a vector (the class token, or the mean of the patch
tokens).  torchvision builds any image size, patch size, depth and width; this module only

* replaces the patch projection ``conv_proj`` (torchvision assumes 3 channels) by one for the
  dataset's channels, initialized as torchvision initializes its own;
* drops the classification head (:class:`fedunet.model.ClientModel` adds its own classifier);
* for mean pooling, drops the class token and its position embedding row.

Registered sizes (``width`` = 1):

=================  =====  ======  =====  ===  =====  ========  ===========
name               depth  hidden  heads  mlp  patch  min grid  pooling
=================  =====  ======  =====  ===  =====  ========  ===========
``vit-tiny``       6      192     4      4x   8      4         class token
``vit-tiny-gap``   6      192     4      4x   8      4         mean
``vit-s16``        12     384     6      4x   16     7         class token
``vit-b16``        12     768     12     4x   16     7         class token
=================  =====  ======  =====  ===  =====  ========  ===========

The patch size is the largest one up to the nominal patch that divides the image and leaves
at least "min grid" tokens per side: ViT-S/16 and ViT-B/16 take patch 16 on 224x224 (14x14
tokens) and patch 4 on 32x32 and 28x28 (8x8 and 7x7 tokens); the tiny ViT, the CPU-sized one,
takes a 4x4 grid on small images (patch 7 on 28x28, patch 8 on 32x32): 17 tokens instead of
50 with patch 4, so on one CPU core at 1/8 width it trains about 3x faster (measured on a loaded
2-core VM, 1x28x28, batch 64: about 450 images/s against 150; VGG11 at the same width: about 1,500).

``width`` scales the hidden size through the head dimension, so the hidden size stays a
multiple of the number of heads: ``hidden = heads * max(16, round(head_dim * width))``, MLP
width ``4 * hidden``.  The floor of 16 per head is the transformer's analogue of
:func:`fedunet.models.scaled`'s floor of 4 channels: at the quick study's 1/8 width
``vit-tiny`` has hidden size 64 (4 heads of 16), not 24.

Parameters (hidden ``h``, MLP ``m``, depth ``L``, channels ``C``, patch ``p``, ``N`` patches),
as torchvision lays them out (LayerNorm weight+bias, MultiheadAttention's packed in-projection
with bias and its out-projection with bias, a two-layer MLP with biases):
``C*p*p*h + h`` (patch projection) ``+ h`` (class token; none with mean pooling)
``+ (N + 1)*h`` (position embedding; ``N*h`` with mean pooling)
``+ L*(4*h*h + 2*h*m + 9*h + m)`` (blocks) ``+ 2*h`` (final LayerNorm).
``vit-s16`` on 3x32x32: 21,338,496; ``vit-b16`` on 3x32x32: 85,144,320; ``vit-tiny`` on
1x28x28 at width 1/8: 304,384 (``tests/test_vit.py`` derives these).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from fedunet.models import register

POOLINGS = ("token", "mean")
MIN_HEAD_DIM = 16

# name: (depth, hidden, heads, mlp_ratio, nominal patch, min tokens per side, pooling)
CONFIGS: dict[str, tuple[int, int, int, int, int, int, str]] = {
    "vit-tiny": (6, 192, 4, 4, 8, 4, "token"),
    "vit-tiny-gap": (6, 192, 4, 4, 8, 4, "mean"),
    "vit-s16": (12, 384, 6, 4, 16, 7, "token"),
    "vit-b16": (12, 768, 12, 4, 16, 7, "token"),
}


def patch_size_for(input_size: int, nominal: int, min_grid: int) -> int:
    """The largest patch up to ``nominal`` that divides the image and leaves ``min_grid`` tokens per side
    (1 if none does)."""
    for p in range(min(nominal, input_size), 0, -1):
        if input_size % p == 0 and input_size // p >= min_grid:
            return p
    return 1


def hidden_size(hidden: int, heads: int, width: float) -> int:
    """Hidden size under a width multiplier: heads fixed, head dimension scaled (at least 16)."""
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
    return heads * max(MIN_HEAD_DIM, int(round(hidden // heads * width)))


class ViT(nn.Module):
    """torchvision's VisionTransformer as a feature extractor: images -> (B, hidden)."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        *,
        depth: int,
        hidden: int,
        heads: int,
        mlp_dim: int,
        patch_size: int,
        pooling: str = "token",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"ViT pooling: {pooling!r} is not allowed; allowed: {', '.join(POOLINGS)}")
        if input_size % patch_size:
            raise ValueError(f"ViT: image size {input_size} is not a multiple of the patch size {patch_size}")
        vit = VisionTransformer(
            image_size=input_size,
            patch_size=patch_size,
            num_layers=depth,
            num_heads=heads,
            hidden_dim=hidden,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
        )
        vit.heads = nn.Identity()  # the classifier lives in ClientModel
        if in_channels != 3:
            proj = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
            nn.init.trunc_normal_(proj.weight, std=math.sqrt(1 / (in_channels * patch_size * patch_size)))
            nn.init.zeros_(proj.bias)
            vit.conv_proj = proj
        if pooling == "mean":
            vit.class_token = None  # no class token: position embeddings for the patches only
            n = (input_size // patch_size) ** 2
            vit.encoder.pos_embedding = nn.Parameter(torch.empty(1, n, hidden).normal_(std=0.02))
            vit.seq_length = n
        self.vit = vit
        self.pooling = pooling
        self.patch_size = patch_size
        self.depth, self.heads, self.mlp_dim = depth, heads, mlp_dim
        self.feature_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.vit._process_input(x)  # (B, N, hidden)
        if self.pooling == "token":
            cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
            return self.vit.encoder(torch.cat([cls, tokens], dim=1))[:, 0]
        return self.vit.encoder(tokens).mean(dim=1)


def build(name: str, in_channels: int, input_size: int, width: float = 1.0, **overrides) -> ViT:
    """A registered configuration, with any constructor argument overridden (``depth``, ``patch_size``,
    ``pooling``...)."""
    depth, hidden, heads, ratio, patch, min_grid, pooling = CONFIGS[name]
    h = hidden_size(hidden, heads, width)
    kwargs = dict(
        depth=depth,
        hidden=h,
        heads=heads,
        mlp_dim=ratio * h,
        patch_size=patch_size_for(input_size, patch, min_grid),
        pooling=pooling,
    )
    kwargs.update(overrides)
    return ViT(in_channels, input_size, **kwargs)


def _factory(name: str):
    def factory(in_channels: int, input_size: int, width: float) -> ViT:
        return build(name, in_channels, input_size, width)

    factory.__name__ = name.replace("-", "_")
    return factory


for _name in CONFIGS:
    register(_name)(_factory(_name))
