"""Backbones created by name from a registry (one decorator per model).

Every backbone is an ``nn.Module`` mapping images ``(B, C, H, W)`` to a penultimate
feature vector ``(B, feature_dim)``; the classifier lives outside the backbone (in
:class:`fedunet.model.ClientModel`) so that FedUNet's fusion can sit in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn


class Backbone(Protocol):
    """What the rest of the library relies on: a module with a known feature width."""

    feature_dim: int

    def __call__(self, x): ...


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a backbone factory ``f(in_channels, input_size, width) -> nn.Module``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, *, in_channels: int, input_size: int, width: float = 1.0) -> nn.Module:
    """Create backbone ``name`` for images of ``in_channels`` x ``input_size`` x ``input_size``."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(available())}") from None
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return factory(in_channels=in_channels, input_size=input_size, width=width)


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 4 so narrow models still learn)."""
    return max(4, int(round(channels * width)))


# Populate the registry.
from fedunet.models import cnn, htfl_cnn, resnet, vgg, vit  # noqa: E402,F401
