"""HtFLlib's small CNNs: the FedAvg-paper CNN and the eight-member CNN family of its 1-channel benchmark.

Every member is built from the same pieces, written from the published architectures:

* conv blocks: ``Conv2d(5x5, no padding) -> ReLU -> MaxPool(2x2)``, 32 channels for the first
  block and 64 for the second (no BatchNorm, no global pooling: the flattened map size
  follows from the input size, e.g. 4x4x64 = 1024 at 28x28 after two blocks, 5x5x64 = 1600
  at 32x32);
* a fully connected stack ``Flatten -> [Linear -> ReLU] * n`` through the hidden widths and
  ending at the feature width 512 (the last ReLU output is the feature vector the classifier,
  ``Linear(512, classes)`` in :class:`fedunet.model.ClientModel`, reads).

``fedavg-cnn`` is the CNN of McMahan et al. (2017) as HtFLlib writes it: two blocks and one
hidden layer of 512 (582,026 parameters with a 10-class head at 1x28x28; the paper's own
"same"-padded variant is larger).  ``htfl-cnn-c{1,2}[-h...]`` are the eight combinations of
one or two blocks with hidden layers none, [512], [1024] or [1024, 512]; the architecture
set ``HTFL_CNN8`` orders them as HtFLlib's benchmark assigns them (client i takes model
i mod 8: one block then two, alternating, as the hidden layers grow).

A width multiplier scales every channel count and layer width (1.0 is the published model).
"""

from __future__ import annotations

from torch import Tensor, nn

from fedunet.models import register, scaled

HIDDEN = {"": (), "-h512": (512,), "-h1024": (1024,), "-h1024-512": (1024, 512)}
# HtFLlib's 1-channel CNN family in client order (client i gets HTFL_CNN8[i % 8])
HTFL_CNN8 = [f"htfl-cnn-c{blocks}{suffix}" for suffix in HIDDEN for blocks in (1, 2)]


class HtflCNN(nn.Module):
    """``blocks`` conv blocks, then fully connected layers through ``hidden`` to ``feature_width``."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        width: float,
        blocks: int,
        hidden: tuple[int, ...],
        feature_width: int = 512,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, input_size
        for out in (32, 64)[:blocks]:
            out = scaled(out, width)
            layers += [nn.Conv2d(channels, out, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, size = out, (size - 4) // 2
            if size < 1:
                raise ValueError(
                    f"{blocks} conv block(s) of 5x5 without padding need a larger input than {input_size}x{input_size}"
                )
        self.conv = nn.Sequential(*layers)
        widths = [channels * size * size] + [scaled(h, width) for h in hidden] + [scaled(feature_width, width)]
        fc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            fc += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.fc = nn.Sequential(*fc)
        self.feature_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))


def _factory(blocks: int, hidden: tuple[int, ...]):
    def build(in_channels: int, input_size: int, width: float) -> HtflCNN:
        return HtflCNN(in_channels, input_size, width, blocks, hidden)

    return build


register("fedavg-cnn")(_factory(2, ()))
for _suffix, _hidden in HIDDEN.items():
    for _blocks in (1, 2):
        register(f"htfl-cnn-c{_blocks}{_suffix}")(_factory(_blocks, _hidden))
