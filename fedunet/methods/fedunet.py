"""FedUNet (Seo, Lee, Park 2025, arXiv 2508.12740) and its whole-U-Net ablation.

Each client keeps its own backbone and an additive U-Net beside it.  ``fedunet`` sends
only the U-Net's bottleneck block (``unet.bottleneck.*``, BatchNorm statistics included
unless ``federated.share_buffers`` is false) and the server averages it weighted by
client sample counts; ``fedunet-unet`` shares the whole U-Net (``unet.*``), the ablation
that asks whether sharing more of the module helps.  Sent each round, each way: the
bottleneck's state (d=1024: 56.66 MB; d=128: 0.89 MB in fp32).
"""

from __future__ import annotations

from fedunet.methods import register
from fedunet.methods.base import StateSharing
from fedunet.unet import BOTTLENECK_PREFIX


def _require_unet(cls, cfg: dict) -> None:
    if cfg["model"]["unet"]["attach"] is False:
        raise ValueError(f"model.unet.attach: method {cls.name} needs the U-Net; allowed values here: auto, true")


@register
class FedUNet(StateSharing):
    name = "fedunet"
    baseline = False
    prefix = BOTTLENECK_PREFIX
    check_config = classmethod(_require_unet)


@register
class FedUNetWholeUNet(StateSharing):
    name = "fedunet-unet"
    baseline = False
    prefix = "unet."
    check_config = classmethod(_require_unet)
