"""fedunet: heterogeneous-model federated learning with an additive U-Net whose bottleneck is shared.

Modules, in import order: ``data``, ``partition``, ``models``, ``unet``, ``fusion``,
``model``, ``serialization``, ``client``, ``methods``, ``metrics``, ``checkpoint``,
``federated``, ``costs``, ``cli``.
"""

__version__ = "0.1.0"
