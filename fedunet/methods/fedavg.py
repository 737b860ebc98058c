"""FedAvg of the whole model (McMahan et al., 2017): the reference FedUNet is measured against.

Only possible when every client has the same architecture; by default the model is the
plain backbone and classifier (no U-Net), i.e. the 58.9 MB per round of VGG16.
Sent each round, each way: the whole state_dict.
"""

from __future__ import annotations

from fedunet.methods import register
from fedunet.methods.base import StateSharing


@register
class FedAvg(StateSharing):
    name = "fedavg"
    prefix = ""
    attach_unet = False

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        archs = cfg["model"]["architectures"]
        if len(set(archs)) > 1:
            raise ValueError(
                f"model.architectures: method fedavg averages the whole model, so every client needs the same "
                f"architecture; got {', '.join(archs)}. Use fedunet for heterogeneous clients."
            )
