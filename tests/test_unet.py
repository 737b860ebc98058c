import pytest
import torch

from fedunet.model import count_parameters, state_nbytes
from fedunet.unet import UNet, pooling_plan


def test_standard_bottleneck_is_the_papers_56_66_mb():
    unet = UNet(3, 1024, 32)
    assert count_parameters(unet.bottleneck) == 14_161_920
    assert state_nbytes(unet.bottleneck) == 56_664_080
    assert round(state_nbytes(unet.bottleneck) / 1e6, 2) == 56.66


def test_compact_bottleneck_is_the_papers_0_89_mb():
    unet = UNet(3, 128, 32)
    assert count_parameters(unet.bottleneck) == 221_952
    assert state_nbytes(unet.bottleneck) == 889_872
    assert round(state_nbytes(unet.bottleneck) / 1e6, 2) == 0.89


def test_bottleneck_size_does_not_depend_on_the_input():
    assert state_nbytes(UNet(1, 128, 28).bottleneck) == state_nbytes(UNet(3, 128, 32).bottleneck)


@pytest.mark.parametrize("size, plan", [(32, [True] * 4), (28, [True, True, True, False]), (8, [True, True, False, False])])
def test_pooling_adapts_to_input_size(size, plan):
    assert pooling_plan(size) == plan


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 28), (3, 17), (3, 8)])
def test_output_is_at_input_resolution(channels, size):
    unet = UNet(channels, 64, size)
    out = unet(torch.randn(2, channels, size, size))
    assert out.shape == (2, 4, size, size)


def test_widths_are_d_over_16_to_d():
    unet = UNet(3, 256, 32)
    assert unet.inc[0].out_channels == 16
    assert [b.conv[0].out_channels for b in unet.down] == [32, 64, 128]
    assert unet.bottleneck.conv[0].in_channels == 128 and unet.bottleneck.conv[0].out_channels == 256


def test_d_must_be_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        UNet(3, 100, 32)


def test_the_decoder_output_depends_on_the_bottleneck_but_mostly_through_the_skips():
    """Replacing the shared bottleneck's weights moves the decoder output (the shared block matters) but by
    a small fraction of its norm (~7% at initialization, d=64, 28 px): the skip connections, which stay
    local, carry most of it (README, dense prediction)."""
    torch.manual_seed(0)
    unet = UNet(1, 64, 28).train()  # batch statistics, as in training
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        before = unet(x)
        for p in unet.bottleneck.parameters():
            p.mul_(-1.0).add_(0.1 * torch.randn_like(p))
        after = unet(x)
    change = ((after - before).norm() / before.norm()).item()
    assert 0.01 < change < 0.25, change


def test_bottleneck_ablation_replaces_z_by_its_per_channel_mean_and_keeps_the_skips():
    torch.manual_seed(0)
    net = UNet(1, 64, 28).train()  # batch statistics: untrained running statistics would shrink every signal
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        z = net.read(x, "bottleneck")[0]
        net.ablate_bottleneck = True
        z_ablated = net.read(x, "bottleneck")[0]
        out_ablated = net(x)
        net.ablate_bottleneck = False
        out = net(x)
    # the same constant for every image and position, per channel: the channel's mean of z
    torch.testing.assert_close(z_ablated, z.mean(dim=(0, 2, 3), keepdim=True).expand_as(z))
    assert z_ablated.std(dim=(0, 2, 3)).max() == 0 and z.std(dim=(0, 2, 3)).max() > 0
    # the decoder still sees the images through the skips: its outputs differ per image, and from the full model's
    assert out_ablated.std(dim=0).mean() > 0.1 * out.std(dim=0).mean()
    assert (out - out_ablated).norm() > 1e-3 * out.norm()
    with torch.no_grad():
        torch.testing.assert_close(net(x), out)  # the flag off restores the model
