"""Local training only: nothing is sent.  The lower bound every federated method must beat.

By default the model is the same as FedUNet's (backbone + U-Net + fusion), so the gap to
``fedunet`` is the effect of sharing the bottleneck alone.
"""

from __future__ import annotations

from fedunet.methods import register
from fedunet.methods.base import Method


@register
class Local(Method):
    name = "local"
    baseline = False
    communicates = False
