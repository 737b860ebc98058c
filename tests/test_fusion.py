import pytest
import torch

from fedunet.fusion import Fusion
from fedunet.model import ClientModel, ModelSpec, select_state


def test_add_keeps_the_feature_width_and_concat_doubles_it():
    add = ClientModel(ModelSpec("vgg11", 3, 16, 5, width=0.125, unet_d=32, fusion="add"))
    cat = ClientModel(ModelSpec("vgg11", 3, 16, 5, width=0.125, unet_d=32, fusion="concat"))
    width = add.backbone.feature_dim
    assert add.classifier.in_features == width
    assert cat.classifier.in_features == 2 * width
    x = torch.randn(2, 3, 16, 16)
    assert add(x).shape == cat(x).shape == (2, 5)


def test_add_is_backbone_features_plus_projected_unet_output():
    fusion = Fusion("add", 4, 8)
    features, unet_out = torch.randn(2, 8), torch.randn(2, 4, 5, 5)
    expected = features + fusion.project(unet_out.mean(dim=(2, 3)))
    torch.testing.assert_close(fusion(features, unet_out), expected)


def test_unknown_fusion_mode_lists_allowed():
    with pytest.raises(ValueError, match="allowed: add, concat"):
        Fusion("sum", 4, 8)


def test_unet_receives_gradient_through_the_fusion():
    model = ClientModel(ModelSpec("cnn", 3, 16, 3, width=0.25, unet_d=32))
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    assert model.unet.bottleneck.conv[0].weight.grad.abs().sum() > 0


def test_plain_model_has_no_unet():
    model = ClientModel(ModelSpec("cnn", 3, 16, 3, unet_d=None))
    assert model.unet is None and select_state(model, "unet.") == {}


def test_select_state_picks_by_name_prefix_and_buffers_optionally():
    model = ClientModel(ModelSpec("vgg11", 3, 16, 3, width=0.125, unet_d=32))
    shared = select_state(model, "unet.bottleneck.")
    assert shared and all(n.startswith("unet.bottleneck.") for n in shared)
    assert any(n.endswith("running_mean") for n in shared)
    no_buffers = select_state(model, "unet.bottleneck.", include_buffers=False)
    assert set(no_buffers) == {n for n, _ in model.named_parameters() if n.startswith("unet.bottleneck.")}
    assert select_state(model, None) == {}
    assert set(select_state(model, "")) == set(model.state_dict())
    # live references: writing through them changes the model
    name = "unet.bottleneck.conv.0.bias"
    shared[name].fill_(3.0)
    assert torch.all(model.state_dict()[name] == 3.0)
