"""The additive U-Net that sits beside each client's backbone.

A Ronneberger-style U-Net with five widths ``d/16, d/8, d/4, d/2, d``: an input block,
three encoder blocks, the ``bottleneck`` block (the only part FedUNet shares), and a
decoder with skip connections back to input resolution.  With ``d = 1024`` the
bottleneck is ``DoubleConv(512 -> 1024)``: 14,161,920 parameters and 56,664,080 bytes
of fp32 state_dict (the paper's 56.66 MB); with ``d = 128`` it is 221,952 parameters
and 889,872 bytes (0.89 MB).

Pooling adapts to the input: a level pools only while the map stays at least
``min_bottleneck_size`` wide at the bottleneck (32x32 gives four poolings and a 2x2
bottleneck; 28x28 gives three and a 3x3 one).  Levels that do not pool keep their
resolution, so the parameter count of the bottleneck never depends on the dataset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 4  # poolings at most; widths are d / 2**LEVELS ... d


class DoubleConv(nn.Sequential):
    """(3x3 conv with bias -> BatchNorm -> ReLU) twice, as in the original U-Net."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Module):
    """Optional 2x2 max-pool, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Upsample (transposed conv, or 1x1 conv where the level did not pool), concat skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, pooled: bool):
        super().__init__()
        half = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, half, 2, stride=2) if pooled else nn.Conv2d(in_channels, half, 1)
        self.conv = DoubleConv(half + out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd sizes (e.g. 7 -> 3 -> 6): pad back to the skip's size
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


def pooling_plan(input_size: int, min_bottleneck_size: int = 2, max_poolings: int = LEVELS) -> list[bool]:
    """Which of the four levels pool, for a square input of ``input_size``."""
    plan, size = [], input_size
    for _ in range(LEVELS):
        pool = len([p for p in plan if p]) < max_poolings and size // 2 >= min_bottleneck_size
        plan.append(pool)
        size = size // 2 if pool else size
    return plan


class UNet(nn.Module):
    """U-Net with bottleneck width ``d``; returns the decoder output at input resolution."""

    def __init__(self, in_channels: int, d: int, input_size: int, min_bottleneck_size: int = 2, max_poolings: int = LEVELS):
        super().__init__()
        if d % 2**LEVELS:
            raise ValueError(f"bottleneck size d must be a multiple of {2**LEVELS}, got {d}")
        widths = [d // 2**k for k in range(LEVELS, -1, -1)]  # d/16, d/8, d/4, d/2, d
        self.plan = pooling_plan(input_size, min_bottleneck_size, max_poolings)
        self.d = d
        self.out_channels = widths[0]
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(Down(widths[i], widths[i + 1], self.plan[i]) for i in range(LEVELS - 1))
        self.bottleneck = Down(widths[-2], widths[-1], self.plan[-1])
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], self.plan[i]) for i in reversed(range(LEVELS)))
        # diagnostics: replace z by its per-channel mean over the batch (evaluation batches are a
        # client's whole split), so nothing image-specific passes through the bottleneck
        self.ablate_bottleneck = False

    def forward(self, x: Tensor) -> Tensor:
        return self.read(x, "decoder")[0]

    def read(self, x: Tensor, source: str = "decoder") -> list[Tensor]:
        """The maps a fusion reading uses: ``decoder`` (the output), ``bottleneck`` (``z``; the
        decoder is skipped, it would not reach the loss), or ``multiscale`` (every decoder level)."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = self.bottleneck(skips[-1])
        if self.ablate_bottleneck:
            x = x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x)
        if source == "bottleneck":
            return [x]
        levels = []
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
            levels.append(x)
        return levels if source == "multiscale" else [x]


BOTTLENECK_PREFIX = "unet.bottleneck."
