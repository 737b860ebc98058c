"""Federated methods, created by name.  Each method is one file holding one subclass of
:class:`fedunet.methods.base.Method`, registered with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable

from fedunet.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"method: unknown method {name!r}; allowed values: {', '.join(available())}") from None


def create(cfg: dict) -> Method:
    return get(cfg["method"])(cfg)


Factory = Callable[[dict], Method]

from fedunet.methods import fd, fedavg, fedgh, fedkd, fedproto, fedtgp, fedunet, fml, lg_fedavg, local  # noqa: E402,F401
