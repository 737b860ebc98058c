"""CIFAR-style ResNet18/34: 3x3 stem without max-pool, four stages, global average pool.

ResNet18 for 10 classes has 11,173,962 parameters, ResNet34 21,282,122.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedunet.models import register, scaled


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], in_channels: int, input_size: int, width: float):
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, channels, size = [], widths[0], input_size
        for i, (n, out) in enumerate(zip(blocks, widths)):
            stride = 2 if i > 0 and size >= 2 else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers = [BasicBlock(channels, out, stride)] + [BasicBlock(out, out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


@register("resnet18")
def resnet18(in_channels: int, input_size: int, width: float) -> ResNet:
    return ResNet([2, 2, 2, 2], in_channels, input_size, width)


@register("resnet34")
def resnet34(in_channels: int, input_size: int, width: float) -> ResNet:
    return ResNet([3, 4, 6, 3], in_channels, input_size, width)
