"""Segmentation client models (fedunet/segmodel.py): per-pixel scores, the shared bottleneck, fusion."""

import pytest
import torch
import torch.nn.functional as F
from helpers import garment_blocks, one_thread  # noqa: F401  (one_thread: autouse, every test here on one thread)

from fedunet.model import ClientModel, ModelSpec, select_state, state_nbytes
from fedunet.segmentation.composites import CompositeOptions, composite
from fedunet.segmentation.dataset import IGNORE_INDEX
from fedunet.segmodel import SEG_BACKBONES, SegClientModel, SegSpec
from fedunet.unet import BOTTLENECK_PREFIX


@pytest.mark.parametrize("arch", SEG_BACKBONES)
@pytest.mark.parametrize("channels, size", [(1, 64), (3, 32)])
def test_segmentation_models_give_per_pixel_scores(arch, channels, size):
    model = SegClientModel(SegSpec(arch, channels, size, num_classes=11, width=0.125, unet_d=32))
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 11, size, size)
    assert model.features(torch.randn(2, channels, size, size)).shape[1] == model.feature_dim


def test_only_the_unet_bottleneck_is_shared_and_it_is_the_classification_one():
    seg = SegClientModel(SegSpec("fcn-vgg11", 1, 64, num_classes=11, width=0.125, unet_d=64))
    shared = select_state(seg, BOTTLENECK_PREFIX)
    assert shared and all(k.startswith("unet.bottleneck.") for k in shared)
    assert not any(k.startswith(("backbone.", "fusion.", "classifier.")) for k in shared)
    everything = seg.state_dict()
    assert {k for k in everything if k.startswith("unet.")} - set(shared)  # the rest of the U-Net stays local
    cls = ClientModel(ModelSpec("vgg11", 1, 28, 10, width=0.125, unet_d=64))
    other = select_state(cls, BOTTLENECK_PREFIX)
    assert {k: v.shape for k, v in shared.items()} == {k: v.shape for k, v in other.items()}  # same bytes per round
    assert sum(t.numel() * t.element_size() for t in shared.values()) == state_nbytes(cls.unet.bottleneck)


def test_fusion_modes_and_plain_model():
    add = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=32, fusion="add"))
    cat = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=32, fusion="concat"))
    plain = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=None))
    k = plain.feature_dim
    assert (add.feature_dim, cat.feature_dim) == (k, 2 * k) and plain.unet is None
    assert add.fusion.project.in_channels == 32 // 16  # the decoder output, d/16 channels
    assert not select_state(plain, BOTTLENECK_PREFIX)
    with pytest.raises(ValueError, match="allowed: add, concat"):
        SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, fusion="sum"))
    with pytest.raises(ValueError, match="allowed: encdec-tiny"):
        SegClientModel(SegSpec("fcn-vit-tiny", 1, 32, 5))


def test_a_few_steps_on_composites_reduce_the_loss():
    torch.manual_seed(0)
    images, labels = garment_blocks([60, 120, 180, 240], [0, 1, 2, 3])
    images[:, :, :, 14:] = 0  # half-width garments, so that there is background to tell apart
    canvas, mask, _ = composite(images, labels, 16, CompositeOptions(canvas_size=32, garments=(1, 2)), seed=0)
    x, y = canvas.float() / 255 - 0.5, mask.long()
    model = SegClientModel(SegSpec("encdec-tiny", 1, 32, num_classes=5, width=0.25, unet_d=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
