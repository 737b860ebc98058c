import pytest
import torch

from fedunet import models
from fedunet.model import ClientModel, ModelSpec, count_parameters


@pytest.mark.parametrize(
    "arch, params",
    [("vgg16", 14_728_266), ("resnet18", 11_173_962), ("resnet34", 21_282_122), ("vgg11", 9_231_114), ("vgg19", 20_040_522)],
)
def test_cifar_parameter_counts(arch, params):
    model = ClientModel(ModelSpec(arch, in_channels=3, input_size=32, num_classes=10, unet_d=None))
    assert count_parameters(model) == params


@pytest.mark.parametrize("arch", models.available())
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (3, 16)])
def test_every_backbone_runs_on_every_geometry(arch, channels, size):
    backbone = models.create(arch, in_channels=channels, input_size=size, width=0.125)
    features = backbone(torch.randn(2, channels, size, size))
    assert features.shape == (2, backbone.feature_dim)


@pytest.mark.parametrize("arch", models.available())
def test_width_multiplier_shrinks_models(arch):
    full = count_parameters(models.create(arch, in_channels=3, input_size=32, width=1.0))
    narrow = count_parameters(models.create(arch, in_channels=3, input_size=32, width=0.25))
    assert narrow < full / 4


def test_vgg_feature_width_follows_multiplier():
    assert models.create("vgg16", in_channels=3, input_size=32).feature_dim == 512
    assert models.create("vgg16", in_channels=1, input_size=28, width=0.125).feature_dim == 64


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: .*resnet18.*vgg16"):
        models.create("vgg17", in_channels=3, input_size=32)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        models.register("vgg16")(lambda **kw: None)
