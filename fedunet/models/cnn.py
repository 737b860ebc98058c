"""A small CNN: the low-capacity end of capacity-gap studies (tiny CNN next to ResNet34).

Two conv blocks and a hidden layer, in the spirit of the CNN of the FedAvg paper but
with BatchNorm and global pooling so that any input size works.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedunet.models import register, scaled


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, input_size: int, width: float):
        super().__init__()
        c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(128, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 4, hidden),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register("cnn")
def cnn(in_channels: int, input_size: int, width: float) -> SmallCNN:
    return SmallCNN(in_channels, input_size, width)
