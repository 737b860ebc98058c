"""A client's whole model: backbone, optional additive U-Net, fusion, local classifier.

Submodule names are part of the protocol: methods select what they share by name
prefix (``unet.bottleneck.``, ``unet.``, ``""`` for everything), never by position.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from fedunet import models
from fedunet.fusion import Fusion
from fedunet.segmodel import SegClientModel, SegSpec
from fedunet.unet import UNet


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build one client's model."""

    architecture: str
    in_channels: int
    input_size: int
    num_classes: int
    width: float = 1.0
    unet_d: int | None = 128  # None: plain backbone + classifier (no U-Net)
    fusion: str = "add"
    fusion_source: str = "decoder"
    fusion_head: str = "linear"
    min_bottleneck_size: int = 2
    max_poolings: int = 4
    feature_width: int | None = None  # a common feature width for methods that exchange features
    projection: str = "pool"  # how backbone features reach feature_width: "pool" or "linear"


class FeatureProjection(nn.Module):
    """Brings any backbone's features to a common width, as heterogeneous-FL methods need.

    ``pool`` is parameter-free adaptive average pooling over the feature vector (HtFLlib's
    choice); ``linear`` is a learned local linear map.
    """

    def __init__(self, kind: str, in_dim: int, out_dim: int):
        super().__init__()
        if kind not in ("pool", "linear"):
            raise ValueError(f"model.projection: {kind!r} is not allowed; allowed values: pool, linear")
        self.kind = kind
        self.map = nn.Linear(in_dim, out_dim) if kind == "linear" else nn.AdaptiveAvgPool1d(out_dim)

    def forward(self, f: Tensor) -> Tensor:
        return self.map(f) if self.kind == "linear" else self.map(f.unsqueeze(1)).squeeze(1)


class ClientModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = models.create(
            spec.architecture, in_channels=spec.in_channels, input_size=spec.input_size, width=spec.width
        )
        feature_dim = self.backbone.feature_dim
        self.unet: UNet | None = None
        self.fusion: Fusion | None = None
        if spec.unet_d is not None:
            self.unet = UNet(spec.in_channels, spec.unet_d, spec.input_size, spec.min_bottleneck_size, spec.max_poolings)
            self.fusion = Fusion(spec.fusion, spec.unet_d, feature_dim, spec.fusion_source, spec.fusion_head)
            feature_dim = self.fusion.out_dim
        self.projection: FeatureProjection | None = None
        if spec.feature_width is not None:
            self.projection = FeatureProjection(spec.projection, feature_dim, spec.feature_width)
            feature_dim = spec.feature_width
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, spec.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The classifier's input: backbone features, fused with the U-Net's output if attached,
        projected to the common feature width if one is set."""
        f = self.backbone(x)
        if self.unet is not None:
            f = self.fusion(f, self.unet.read(x, self.fusion.source))
        if self.projection is not None:
            f = self.projection(f)
        return f

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build_model(spec: ModelSpec | SegSpec) -> nn.Module:
    """A client's model from its spec: :class:`ClientModel` (classification) or
    :class:`~fedunet.segmodel.SegClientModel` (segmentation, per-pixel scores)."""
    return SegClientModel(spec) if isinstance(spec, SegSpec) else ClientModel(spec)


def select_state(model: nn.Module, prefix: str | None, include_buffers: bool = True) -> dict[str, Tensor]:
    """The state tensors whose names start with ``prefix`` (live references, not copies).

    ``prefix=None`` selects nothing; ``""`` selects the whole model.  BatchNorm
    buffers are included unless ``include_buffers`` is false.
    """
    if prefix is None:
        return {}
    names = set(dict(model.named_parameters()))
    state = model.state_dict(keep_vars=True)
    return {
        name: t.data if isinstance(t, nn.Parameter) else t
        for name, t in state.items()
        if name.startswith(prefix) and (include_buffers or name in names)
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def state_nbytes(module: nn.Module) -> int:
    """Raw bytes of the module's state_dict tensors (parameters and buffers)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
