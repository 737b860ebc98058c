"""Segmentation client models: a per-client backbone giving per-pixel features, the additive U-Net
fused per pixel, and a 1x1-conv classifier.

* Backbones (``SEG_BACKBONES``), each mapping ``(B, C, H, W)`` to per-pixel features
  ``(B, K, H, W)`` with a known ``feature_dim`` K:

  - ``encdec-tiny``: a tiny encoder-decoder of its own (two conv-pool levels down, bilinear up with
    skip connections, widths 32/64/128 x width);
  - ``fcn-<vgg11|vgg13|vgg16|vgg19|resnet18|resnet34|cnn>``: the convolutional part of a registered
    classification backbone (``fedunet.models``) with a light FCN head, 3x3 conv-BN-ReLU to K
    channels on the encoder's last map, bilinearly upsampled to the input resolution (FCN-32s style;
    K = the encoder's width).

* The U-Net is :class:`fedunet.unet.UNet` itself, so its ``bottleneck`` is the very block FedUNet
  shares in classification (same ``d``, same tensors, same bytes). Its decoder output (``d/16``
  channels at input resolution) is mapped per pixel by a local 1x1 conv to K channels and added to
  the backbone's features (``fusion="add"``, K channels) or concatenated (``"concat"``, 2K), then a
  1x1 conv classifies each pixel.

Submodule names follow :class:`fedunet.model.ClientModel`'s protocol: ``backbone.``, ``unet.``
(``unet.bottleneck.`` is all FedUNet shares), ``fusion.``, ``classifier.``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedunet import models
from fedunet.fusion import diagnose
from fedunet.models import scaled
from fedunet.unet import UNet

SEG_FUSIONS = ("add", "concat")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyEncoderDecoder(nn.Module):
    """Two conv-pool levels down, a middle block, bilinear upsampling with skips back up."""

    def __init__(self, in_channels: int, input_size: int, width: float):
        super().__init__()
        c1, c2, c3 = scaled(32, width), scaled(64, width), scaled(128, width)
        self.enc1, self.enc2 = _conv_bn_relu(in_channels, c1), _conv_bn_relu(c1, c2)
        self.mid = _conv_bn_relu(c2, c3)
        self.dec2, self.dec1 = _conv_bn_relu(c3 + c2, c2), _conv_bn_relu(c2 + c1, c1)
        self.feature_dim = c1

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([e2, F.interpolate(m, size=e2.shape[-2:], mode="bilinear", align_corners=False)], 1))
        return self.dec1(torch.cat([e1, F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False)], 1))


def encoder_of(name: str, in_channels: int, input_size: int, width: float) -> tuple[nn.Module, int]:
    """The convolutional part of a registered classification backbone and its output channels."""
    backbone = models.create(name, in_channels=in_channels, input_size=input_size, width=width)
    if hasattr(backbone, "stages"):  # ResNet: stem + stages
        return nn.Sequential(backbone.stem, backbone.stages), backbone.feature_dim
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):  # VGG; the small CNN up to its global pooling
        layers = []
        for layer in features:
            if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.Flatten)):
                break
            layers.append(layer)
        convs = [m for m in layers if isinstance(m, nn.Conv2d)]
        return nn.Sequential(*layers), convs[-1].out_channels
    raise ValueError(f"segmentation: backbone {name!r} has no convolutional encoder to reuse")


class FCNBackbone(nn.Module):
    """A classification backbone's encoder + light FCN head upsampled to the input resolution."""

    def __init__(self, name: str, in_channels: int, input_size: int, width: float):
        super().__init__()
        self.encoder, channels = encoder_of(name, in_channels, input_size, width)
        self.head = _conv_bn_relu(channels, channels)
        self.feature_dim = channels

    def forward(self, x: Tensor) -> Tensor:
        f = self.head(self.encoder(x))
        return F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)


FCN_ENCODERS = ("cnn", "resnet18", "resnet34", "vgg11", "vgg13", "vgg16", "vgg19")
SEG_BACKBONES = ("encdec-tiny",) + tuple(f"fcn-{n}" for n in FCN_ENCODERS)


def create_seg_backbone(name: str, in_channels: int, input_size: int, width: float = 1.0) -> nn.Module:
    if name == "encdec-tiny":
        return TinyEncoderDecoder(in_channels, input_size, width)
    if name.startswith("fcn-") and name[4:] in FCN_ENCODERS:
        return FCNBackbone(name[4:], in_channels, input_size, width)
    raise ValueError(f"unknown segmentation backbone {name!r}; allowed: {', '.join(SEG_BACKBONES)}")


@dataclass(frozen=True)
class SegSpec:
    """Everything needed to build one client's segmentation model."""

    architecture: str
    in_channels: int
    input_size: int
    num_classes: int  # background included
    width: float = 1.0
    unet_d: int | None = 128  # None: backbone + classifier only
    fusion: str = "add"
    min_bottleneck_size: int = 2
    max_poolings: int = 4


class PixelFusion(nn.Module):
    """Per-pixel fusion of the U-Net decoder output: local 1x1 conv to K channels, then add or concat."""

    def __init__(self, mode: str, unet_channels: int, feature_dim: int):
        super().__init__()
        if mode not in SEG_FUSIONS:
            raise ValueError(f"model.fusion: {mode!r} is not allowed; allowed: {', '.join(SEG_FUSIONS)}")
        self.mode = mode
        self.project = nn.Conv2d(unet_channels, feature_dim, 1)
        self.out_dim = feature_dim if mode == "add" else 2 * feature_dim
        # diagnostics, as fedunet.fusion.Fusion's: zero one path ("unet": backbone alone; "backbone":
        # U-Net alone), or collect both paths' per-pixel L2 norms summed over pixels (a list)
        self.ablate: str | None = None
        self.norms: list[Tensor] | None = None

    def forward(self, features: Tensor, decoder: Tensor) -> Tensor:
        features, u = diagnose(self, features, self.project(decoder))
        return features + u if self.mode == "add" else torch.cat([features, u], dim=1)


class SegClientModel(nn.Module):
    """Images ``(B, C, H, W)`` -> per-pixel class scores ``(B, num_classes, H, W)``."""

    def __init__(self, spec: SegSpec):
        super().__init__()
        self.spec = spec
        self.backbone = create_seg_backbone(spec.architecture, spec.in_channels, spec.input_size, spec.width)
        dim = self.backbone.feature_dim
        self.unet: UNet | None = None
        self.fusion: PixelFusion | None = None
        if spec.unet_d is not None:
            self.unet = UNet(spec.in_channels, spec.unet_d, spec.input_size, spec.min_bottleneck_size, spec.max_poolings)
            self.fusion = PixelFusion(spec.fusion, self.unet.out_channels, dim)
            dim = self.fusion.out_dim
        self.feature_dim = dim
        self.classifier = nn.Conv2d(dim, spec.num_classes, 1)

    def features(self, x: Tensor) -> Tensor:
        """Per-pixel classifier input ``(B, feature_dim, H, W)``."""
        f = self.backbone(x)
        if self.unet is not None:
            f = self.fusion(f, self.unet(x))
        return f

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
