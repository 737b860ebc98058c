from fedunet import costs
from fedunet.model import ClientModel, ModelSpec, count_parameters


def test_flops_count_the_unet_on_top_of_the_backbone():
    spec = ModelSpec("vgg16", 3, 32, 10, unet_d=128)
    c = costs.backbone_costs(spec)
    assert c["parameters"] == 14_728_266
    # VGG16 on 32x32: ~0.31 GMACs forward; training ~3x forward, 2 FLOPs per MAC
    assert 1.7e9 < c["train_flops_per_sample"] < 2.0e9
    assert c["train_flops_per_sample_with_unet"] > c["train_flops_per_sample"]


def test_compact_unet_costs_more_than_a_narrow_backbone():
    """The trade-off users must see: light in traffic, not in compute, at full resolution."""
    c = costs.backbone_costs(ModelSpec("vgg11", 1, 28, 10, width=0.125, unet_d=128))
    assert c["flops_ratio_with_unet"] > 2


def test_bottleneck_costs_match_the_paper_arithmetic():
    c = costs.bottleneck_costs(1024, ModelSpec("cnn", 3, 32, 10))
    assert c["bottleneck_state_bytes"] == 56_664_080
    assert 0 < c["payload_bytes_fp32"] - 56_664_080 < 4096  # header and alignment
    assert c["widths"] == [64, 128, 256, 512, 1024]


def test_one_count_gives_flops_activations_and_parameters():
    spec = ModelSpec("cnn", 1, 28, 10, width=0.5, unet_d=64)
    c = costs.model_costs(spec)
    assert c["train_flops"] > 2 * c["forward_flops"] > 0 and c["activation_bytes"] > 0
    assert c["parameters"] == count_parameters(ClientModel(spec))
    assert costs.training_flops_per_sample(spec) == c["train_flops"]
    assert costs.backbone_costs(spec)["train_flops_per_sample_with_unet"] == c["train_flops"]
