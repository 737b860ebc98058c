"""Vision Transformer backbones (fedunet/models/vit.py): sizes, geometries, FedUNet beside a ViT."""

import pytest
import torch
import torch.nn.functional as F
from helpers import one_thread  # noqa: F401  (autouse: every test here on one thread)

from fedunet import models
from fedunet.federated import Simulation
from fedunet.model import ClientModel, ModelSpec, count_parameters, select_state
from fedunet.models.vit import CONFIGS, hidden_size, patch_size_for
from fedunet.unet import BOTTLENECK_PREFIX


def vit_parameters(C, p, N, h, m, L, token=True):
    """torchvision's ViT without its head, counted by hand:
    patch projection Conv2d(C, h, p, stride p) = C*p*p*h + h
    class token                                = h            (mean pooling: none)
    position embedding                         = (N + 1) * h  (mean pooling: N * h)
    per block: ln_1 2h + attention (packed in-proj 3h*h + 3h, out-proj h*h + h) 4h*h + 4h
               + ln_2 2h + MLP (h*m + m) + (m*h + h)   = 4h*h + 2h*m + 9h + m
    final LayerNorm                            = 2h
    """
    return C * p * p * h + h + (h if token else 0) + (N + int(token)) * h + L * (4 * h * h + 2 * h * m + 9 * h + m) + 2 * h


# (arch, channels, size, width) -> (C, p, N, h, m, L, token) and the count worked out by hand
CASES = [
    # tiny at 1/8 width on Fashion-MNIST: head dim round(48/8)=6 -> floor 16, h = 4*16 = 64, m = 256;
    # patch 7 (4x4 grid): 49*64+64 = 3,200; cls 64; pos 17*64 = 1,088;
    # block 4*4,096 + 2*64*256 + 9*64 + 256 = 49,984, x6 = 299,904; ln 128 -> 304,384
    (("vit-tiny", 1, 28, 0.125), (1, 7, 16, 64, 256, 6, True), 304_384),
    # the same with mean pooling: minus the class token and one position row (2*64) -> 304,256
    (("vit-tiny-gap", 1, 28, 0.125), (1, 7, 16, 64, 256, 6, False), 304_256),
    # tiny at 1/8 width on CIFAR: patch 8 (4x4 grid): 3*64*64+64 = 12,352; + 64 + 1,088 + 299,904 + 128 -> 313,536
    (("vit-tiny", 3, 32, 0.125), (3, 8, 16, 64, 256, 6, True), 313_536),
    # tiny at full width on CIFAR: h = 192, m = 768; patch 3*64*192+192 = 37,056; cls 192; pos 17*192 = 3,264;
    # block 4*36,864 + 2*192*768 + 9*192 + 768 = 444,864, x6 = 2,669,184; ln 384 -> 2,710,080
    (("vit-tiny", 3, 32, 1.0), (3, 8, 16, 192, 768, 6, True), 2_710_080),
    # ViT-S/16 on CIFAR takes patch 4 (8x8 grid): h = 384, m = 1,536; patch 48*384+384 = 18,816; cls 384;
    # pos 65*384 = 24,960; block 589,824 + 1,179,648 + 3,456 + 1,536 = 1,774,464, x12 = 21,293,568; ln 768
    # -> 21,338,496
    (("vit-s16", 3, 32, 1.0), (3, 4, 64, 384, 1536, 12, True), 21_338_496),
    # ViT-B/16 on CIFAR, patch 4: h = 768, m = 3,072; patch 48*768+768 = 37,632; cls 768; pos 65*768 = 49,920;
    # block 2,359,296 + 4,718,592 + 6,912 + 3,072 = 7,087,872, x12 = 85,054,464; ln 1,536 -> 85,144,320
    (("vit-b16", 3, 32, 1.0), (3, 4, 64, 768, 3072, 12, True), 85_144_320),
]


@pytest.mark.parametrize("key, dims, expected", CASES, ids=[f"{c[0][0]}-{c[0][1]}x{c[0][2]}-w{c[0][3]}" for c in CASES])
def test_parameter_counts_match_the_hand_derived_formula(key, dims, expected):
    arch, channels, size, width = key
    assert vit_parameters(*dims) == expected
    backbone = models.create(arch, in_channels=channels, input_size=size, width=width)
    assert count_parameters(backbone) == expected
    C, p, N, h, m, L, token = dims
    assert (backbone.patch_size, backbone.feature_dim, backbone.mlp_dim, backbone.depth) == (p, h, m, L)
    assert (backbone.vit.class_token is not None) == token


def test_head_is_dropped_and_the_classifier_is_the_client_models():
    model = ClientModel(ModelSpec("vit-tiny", in_channels=1, input_size=28, num_classes=10, width=0.125, unet_d=None))
    assert not any(name.startswith("backbone.vit.heads") for name, _ in model.named_parameters())
    # ClientModel adds Linear(64, 10) = 650 to the backbone's 304,384
    assert count_parameters(model) == 304_384 + 650


@pytest.mark.parametrize("width", [0.0625, 0.125, 0.25, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_width_scales_hidden_size_in_multiples_of_the_heads(arch, width):
    depth, hidden, heads, ratio, *_ = CONFIGS[arch]
    h = hidden_size(hidden, heads, width)
    assert h % heads == 0 and h // heads >= 16
    assert h == heads * max(16, round(hidden / heads * width))
    if h > 400:
        return  # the formula is enough; building ViT-B-sized models here only costs time
    backbone = models.create(arch, in_channels=3, input_size=16, width=width)
    assert backbone.feature_dim == h and backbone.mlp_dim == ratio * h
    for block in backbone.vit.encoder.layers:
        assert block.self_attention.num_heads == heads


def test_patch_size_rule():
    assert [patch_size_for(s, 16, 7) for s in (224, 96, 32, 28, 16)] == [16, 12, 4, 4, 2]
    assert [patch_size_for(s, 8, 4) for s in (28, 32, 16, 64)] == [7, 8, 4, 8]
    assert patch_size_for(5, 16, 7) == 1  # nothing fits: one pixel per token


@pytest.mark.parametrize("arch", ["vit-tiny", "vit-tiny-gap", "vit-s16"])  # vit-b16: test_models.py
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_grayscale_and_color_paths(arch, channels, size):
    torch.manual_seed(0)
    backbone = models.create(arch, in_channels=channels, input_size=size, width=0.125)
    assert backbone.vit.conv_proj.in_channels == channels
    x = torch.randn(3, channels, size, size)
    out = backbone(x)
    assert out.shape == (3, backbone.feature_dim) and torch.isfinite(out).all()
    # channels_last input (what the engine's normalizer may hand over) gives the same features
    backbone.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x), backbone(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_pooling_reads_the_class_token_or_the_mean():
    torch.manual_seed(0)
    token = models.create("vit-tiny", in_channels=1, input_size=28, width=0.125).eval()
    mean = models.create("vit-tiny-gap", in_channels=1, input_size=28, width=0.125).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        seq = token.vit._process_input(x)
        full = token.vit.encoder(torch.cat([token.vit.class_token.expand(2, -1, -1), seq], dim=1))
        assert torch.equal(token(x), full[:, 0])
        assert mean.vit.encoder.pos_embedding.shape == (1, 16, 64)
        assert torch.allclose(mean(x), mean.vit.encoder(mean.vit._process_input(x)).mean(1))


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = models.create("vit-tiny", in_channels=1, input_size=28, width=0.125)
    torch.manual_seed(3)
    b = models.create("vit-tiny", in_channels=1, input_size=28, width=0.125)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unet_beside_a_vit_shares_only_the_bottleneck():
    spec = ModelSpec("vit-tiny", in_channels=1, input_size=28, num_classes=10, width=0.125, unet_d=64)
    model = ClientModel(spec)
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    shared = select_state(model, BOTTLENECK_PREFIX)
    assert shared and all(name.startswith("unet.bottleneck.") for name in shared)
    assert not any(name.startswith("backbone.") for name in shared)
    # the ViT's bottleneck tensors are exactly those of a VGG client's: they can be averaged together
    vgg = ClientModel(ModelSpec("vgg11", in_channels=1, input_size=28, num_classes=10, width=0.125, unet_d=64))
    other = select_state(vgg, BOTTLENECK_PREFIX)
    assert {k: v.shape for k, v in shared.items()} == {k: v.shape for k, v in other.items()}


def test_fedunet_round_with_vit_and_cnn_clients(tiny_cfg, tmp_path):
    """A real FedUNet round with ViT clients next to a VGG: after it, every client holds the same
    bottleneck and its own backbone."""
    cfg = tiny_cfg(model={"architectures": ["vit-tiny", "vgg11", "vit-tiny-gap"], "width": 0.125, "unet": {"d": 32}})
    sim = Simulation(cfg, tmp_path)
    sim.build()
    before = [{k: v.clone() for k, v in c.model.state_dict().items() if k.startswith("backbone.")} for c in sim.clients]
    row = sim.run_round(1)
    assert row["bytes_up"] > 0
    ref = select_state(sim.clients[0].model, BOTTLENECK_PREFIX)
    for client, old in zip(sim.clients, before):
        mine = select_state(client.model, BOTTLENECK_PREFIX)
        assert all(torch.equal(mine[k].cpu(), ref[k].cpu()) for k in ref)
        state = client.model.state_dict()
        assert any(not torch.equal(state[k].cpu(), v.cpu()) for k, v in old.items())  # trained locally
    assert [c.architecture for c in sim.clients] == ["vit-tiny", "vgg11", "vit-tiny-gap", "vit-tiny"]


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = ClientModel(ModelSpec("vit-tiny", in_channels=1, input_size=28, num_classes=4, width=0.125, unet_d=32))
    x = torch.randn(32, 1, 28, 28)
    y = torch.arange(32) % 4
    x = x + y.view(-1, 1, 1, 1).float()  # learnable: the class shifts the image
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
