"""Federated methods, created by name.  Each method is one file holding one subclass of
:class:`fedunet.methods.base.Method`, registered with :func:`register` under its ``name``.
"""

from __future__ import annotations

from fedunet.methods.base import Method
from fedunet.registry import Registry

# Bound before the method files are imported, because each of them runs
# ``from fedunet.methods import register`` while this package is half imported.  (With the
# registry in a module the method files import from, e.g. fedunet.methods.base, this file could
# hold imports only.)
REGISTRY: Registry[type[Method]] = Registry("method", field="method")
register = REGISTRY.register  # bare @register on a Method subclass: registered under its `name`

# each method file registers its method when imported
from fedunet.methods import fd, fedavg, fedgh, fedkd, fedproto, fedtgp, fedunet, fml, lg_fedavg, local  # noqa: E402,F401


def available() -> list[str]:
    return REGISTRY.names()


def get(name: str) -> type[Method]:
    return REGISTRY.get(name)


def attaches_unet(method: str, attach: str | bool = "auto") -> bool:
    """Whether a run of ``method`` has a U-Net: ``model.unet.attach``, where ``auto`` follows the method
    (FedAvg and the prototype methods train the plain backbone)."""
    return get(method).attach_unet if attach == "auto" else bool(attach)


def create(cfg: dict) -> Method:
    return get(cfg["method"])(cfg)
