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
    with pytest.raises(ValueError, match="model.architectures: unknown architecture 'vgg17'; allowed values: .*resnet18.*vgg16"):
        models.create("vgg17", in_channels=3, input_size=32)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        models.register("vgg16")(lambda **kw: None)


# HtFLlib's small CNNs at 1x28x28 with a 10-class head, counted by hand:
#   conv block 1: 1*32*25 + 32 = 832; conv block 2: 32*64*25 + 64 = 51,264
#   flattened map: one block 32 x 12 x 12 = 4,608; two blocks 64 x 4 x 4 = 1,024
#   fc to 512 from 4,608: 2,359,808; from 1,024: 524,800; 512->512: 262,656;
#   4,608->1024: 4,719,616; 1,024->1,024: 1,049,600; 1,024->512: 524,800; head 512*10 + 10 = 5,130
# FedAvg CNN (two blocks, hidden 512) = 832 + 51,264 + 524,800 + 5,130 = 582,026
HTFL_COUNTS = {
    "fedavg-cnn": 582_026,
    "htfl-cnn-c1": 832 + 2_359_808 + 5_130,  # 2,365,770 (about 2.37M)
    "htfl-cnn-c2": 832 + 51_264 + 524_800 + 5_130,  # 582,026 (0.58M)
    "htfl-cnn-c1-h512": 2_365_770 + 262_656,  # 2,628,426 (2.63M)
    "htfl-cnn-c2-h512": 582_026 + 262_656,  # 844,682 (0.84M)
    "htfl-cnn-c1-h1024": 832 + 4_719_616 + 524_800 + 5_130,  # 5,250,378 (5.25M)
    "htfl-cnn-c2-h1024": 832 + 51_264 + 1_049_600 + 524_800 + 5_130,  # 1,631,626 (1.63M)
    "htfl-cnn-c1-h1024-512": 5_250_378 + 262_656,  # 5,513,034 (5.51M)
    "htfl-cnn-c2-h1024-512": 1_631_626 + 262_656,  # 1,894,282 (1.89M)
}


@pytest.mark.parametrize("arch, params", HTFL_COUNTS.items())
def test_htfllib_cnn_parameter_counts(arch, params):
    model = ClientModel(ModelSpec(arch, in_channels=1, input_size=28, num_classes=10, unet_d=None))
    assert count_parameters(model) == params
    assert model.feature_dim == 512


def test_htfllib_cnn8_set_order_and_sizes():
    from fedunet.models.htfl_cnn import HTFL_CNN8

    # client i takes model i mod 8: one conv block then two, alternating, as the hidden layers grow
    millions = [round(HTFL_COUNTS[a] / 1e6, 2) for a in HTFL_CNN8]
    assert millions == [2.37, 0.58, 2.63, 0.84, 5.25, 1.63, 5.51, 1.89]


def test_fedavg_cnn_on_cifar_geometry_matches_htfllib_dim_1600():
    backbone = models.create("fedavg-cnn", in_channels=3, input_size=32)
    assert backbone.fc[1].in_features == 64 * 5 * 5  # HtFLlib's FedAvgCNN(dim=1600) for 32x32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_htfllib_cnn_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="larger input"):
        models.create("htfl-cnn-c2", in_channels=1, input_size=12)
