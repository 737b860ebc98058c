"""CIFAR-style VGG with BatchNorm (3x3 convs, max-pooling, one linear classifier).

The layout is the one CIFAR papers use (a single ``Linear(512, classes)`` head, no
4096-wide MLP), so VGG16-BN for 10 classes has 14,728,266 parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedunet.models import register, scaled

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(nn.Module):
    """VGG feature extractor ending in a global average pool.

    Pools that would shrink the map below 1x1 (28x28 inputs allow only four) are
    dropped, so every input size of at least 2x2 works; on 32x32 the final map is
    already 1x1 and the average pool changes nothing.
    """

    def __init__(self, config: list[int | str], in_channels: int, input_size: int, width: float):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, input_size
        for item in config:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


def _factory(name: str):
    def build(in_channels: int, input_size: int, width: float) -> VGG:
        return VGG(CONFIGS[name], in_channels, input_size, width)

    build.__name__ = name
    return build


for _name in CONFIGS:
    register(_name)(_factory(_name))
