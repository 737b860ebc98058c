"""Backbones created by name from a registry (one decorator per model).

Every backbone is an ``nn.Module`` mapping images ``(B, C, H, W)`` to a penultimate
feature vector ``(B, feature_dim)``; the classifier lives outside the backbone (in
:class:`fedunet.model.ClientModel`) so that FedUNet's fusion can sit in between.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedunet.registry import Registry

# Bound before the backbone files are imported, because each of them runs
# ``from fedunet.models import register, scaled`` while this package is half imported.  (With
# `register` and `scaled` in a module of their own that the backbone files import from, this
# file could hold imports only.)
REGISTRY: Registry[Callable[..., nn.Module]] = Registry("architecture", field="model.architectures")
register = REGISTRY.register  # @register("name") on a factory f(in_channels, input_size, width) -> nn.Module


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 4 so narrow models still learn)."""
    return max(4, int(round(channels * width)))


# each backbone file registers its backbones when imported
from fedunet.models import cnn, htfl_cnn, resnet, vgg, vit  # noqa: E402,F401


def available() -> list[str]:
    return REGISTRY.names()


def create(name: str, *, in_channels: int, input_size: int, width: float = 1.0) -> nn.Module:
    """Create backbone ``name`` for images of ``in_channels`` x ``input_size`` x ``input_size``."""
    factory = REGISTRY.get(name)
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return factory(in_channels=in_channels, input_size=input_size, width=width)
