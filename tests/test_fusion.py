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
    fusion = Fusion("add", 64, 8)  # decoder output of d=64: 4 channels
    features, unet_out = torch.randn(2, 8), torch.randn(2, 4, 5, 5)
    expected = features + fusion.project(unet_out.mean(dim=(2, 3)))
    torch.testing.assert_close(fusion(features, unet_out), expected)


@pytest.mark.parametrize(
    "field,args,allowed",
    [
        ("model.fusion", ("sum", 64, 8), "add, concat"),
        ("model.fusion_source", ("add", 64, 8, "encoder"), "decoder, bottleneck, multiscale"),
        ("model.fusion_head", ("add", 64, 8, "decoder", "mlp"), "linear, conv"),
    ],
)
def test_unknown_fusion_settings_name_the_field_and_list_allowed(field, args, allowed):
    with pytest.raises(ValueError, match=f"{field}: .* allowed: {allowed}"):
        Fusion(*args)


READINGS = [(src, head) for src in ("decoder", "bottleneck", "multiscale") for head in ("linear", "conv")]


def reading_model(source, head, mode="add", d=64):
    return ClientModel(ModelSpec("vgg11", 1, 28, 10, width=0.125, unet_d=d, fusion=mode, fusion_source=source, fusion_head=head))


@pytest.mark.parametrize("source,head", READINGS)
def test_every_reading_has_the_head_it_names_and_trains_the_shared_bottleneck(source, head):
    d = 64
    model = reading_model(source, head, d=d)
    k = model.backbone.feature_dim
    channels = {"decoder": [d // 16], "bottleneck": [d], "multiscale": [d // 2, d // 4, d // 8, d // 16]}[source]
    head_params = sum(p.numel() for p in model.fusion.parameters())
    if head == "linear":  # one Linear over the concatenated pooled maps
        assert head_params == sum(channels) * k + k
    else:  # per map: 3x3 conv without bias + BatchNorm affine
        assert head_params == sum(c * k * 9 + 2 * k for c in channels)
    x = torch.randn(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    model(x).sum().backward()
    assert model.unet.bottleneck.conv[0].weight.grad.abs().sum() > 0
    decoder_grad = model.unet.up[0].conv[0].weight.grad
    if source == "bottleneck":  # the decoder is not read: it gets no gradient at all
        assert decoder_grad is None
    else:
        assert decoder_grad is not None and decoder_grad.abs().sum() > 0
    # only the bottleneck is shared; every head tensor is local
    shared = select_state(model, "unet.bottleneck.")
    assert shared and not any(n.startswith("fusion.") for n in shared)


def test_linear_decoder_reading_reaches_the_logits_through_d_over_16_numbers():
    model = reading_model("decoder", "linear", d=64)
    assert model.fusion.project.in_features == 4
    assert reading_model("bottleneck", "linear", d=64).fusion.project.in_features == 64
    assert reading_model("multiscale", "linear", d=64).fusion.project.in_features == 32 + 16 + 8 + 4


def test_conv_head_is_conv_bn_relu_then_pool():
    fusion = Fusion("add", 64, 8, "decoder", "conv").eval()
    maps = torch.randn(2, 4, 6, 6)
    h = fusion.heads[0]
    expected = torch.relu(h.bn(h.conv(maps))).mean(dim=(2, 3))
    torch.testing.assert_close(fusion.unet_vector([maps]), expected)
    assert (fusion.unet_vector([maps]) >= 0).all()


@pytest.mark.parametrize("mode", ["add", "concat"])
def test_ablation_zeroes_one_path_and_norms_are_recorded(mode):
    fusion = Fusion(mode, 64, 8).eval()
    features, maps = torch.randn(3, 8), torch.randn(3, 4, 5, 5)
    u = fusion.unet_vector([maps])
    fusion.ablate = "unet"
    only_backbone = fusion(features, maps)
    fusion.ablate = "backbone"
    only_unet = fusion(features, maps)
    fusion.ablate = None
    if mode == "add":
        torch.testing.assert_close(only_backbone, features)
        torch.testing.assert_close(only_unet, u)
    else:
        torch.testing.assert_close(only_backbone, torch.cat([features, torch.zeros_like(u)], 1))
        torch.testing.assert_close(only_unet, torch.cat([torch.zeros_like(features), u], 1))
    fusion.norms = []
    fusion(features, maps)
    torch.testing.assert_close(fusion.norms[0], torch.stack([features.norm(dim=1).sum(), u.norm(dim=1).sum()]))


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
