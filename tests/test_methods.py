import pytest
import torch

from fedunet import methods
from fedunet.federated import Simulation
from fedunet.methods.aggregate import weighted_mean
from fedunet.methods.base import Upload, participants


def build(cfg, tmp_path):
    sim = Simulation(cfg, tmp_path)
    sim.build()
    return sim


def test_registry_lists_the_methods():
    assert {"fedunet", "fedunet-unet", "fedavg", "local"} <= set(methods.available())
    with pytest.raises(ValueError, match="allowed values"):
        methods.get("nope")


def test_weighted_mean_matches_hand_computation():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([4.0, -2.0]), "n": torch.tensor(20)}
    out = weighted_mean([Upload(None, a, 1.0), Upload(None, b, 3.0)])
    torch.testing.assert_close(out["w"], torch.tensor([(1 + 12) / 4, (2 - 6) / 4]))
    assert out["n"].dtype == torch.int64 and out["n"].item() == round((10 + 60) / 4)


@pytest.mark.parametrize("method, prefix", [("fedunet", "unet.bottleneck."), ("fedunet-unet", "unet.")])
def test_uploads_hold_exactly_the_named_tensors(tiny_cfg, tmp_path, method, prefix):
    sim = build(tiny_cfg(method=method), tmp_path)
    for c in sim.clients:
        sent = sim.method.upload(c, 1)
        expected = {n for n in c.model.state_dict() if n.startswith(prefix)}
        assert set(sent) == expected


def test_share_buffers_false_sends_parameters_only(tiny_cfg, tmp_path):
    sim = build(tiny_cfg(federated={"rounds": 2, "share_buffers": False}), tmp_path)
    sent = sim.method.upload(sim.clients[0], 1)
    assert sent and not any("running" in n or "num_batches" in n for n in sent)


def test_aggregation_is_the_sample_weighted_mean_and_touches_nothing_else(tiny_cfg, tmp_path):
    sim = build(tiny_cfg(), tmp_path)
    clients = sim.clients
    # make every client's shared tensors differ, as after local training
    with torch.no_grad():
        for c in clients:
            for t in sim.method.shared(c).values():
                if t.is_floating_point():
                    t.add_(torch.randn_like(t))
    before = [{n: t.clone() for n, t in c.model.state_dict().items()} for c in clients]
    uploads = [Upload(c, {n: t.clone() for n, t in sim.method.upload(c, 1).items()}, float(c.num_train)) for c in clients]
    message, numbers = sim.method.aggregate(1, uploads)
    assert numbers == {}  # FedAvg's server computes nothing but the mean
    for c in clients:
        sim.method.download(c, message)

    weights = torch.tensor([float(c.num_train) for c in clients], dtype=torch.float64)
    weights /= weights.sum()
    name = "unet.bottleneck.conv.0.weight"
    hand = sum(w * b[name].double() for w, b in zip(weights, before))
    for c, b in zip(clients, before):
        after = c.model.state_dict()
        torch.testing.assert_close(after[name].double(), hand, rtol=1e-5, atol=1e-6)
        for n, t in after.items():
            if not n.startswith("unet.bottleneck."):
                assert torch.equal(t, b[n]), f"unshared tensor {n} changed at aggregation"


def test_fedavg_makes_every_client_identical(tiny_cfg, tmp_path):
    sim = build(tiny_cfg(method="fedavg", model={"architectures": ["cnn"], "width": 0.25}), tmp_path)
    assert sim.clients[0].model.unet is None  # plain backbone by default
    message, _ = sim.method.aggregate(1, [Upload(c, sim.method.upload(c, 1), float(c.num_train)) for c in sim.clients])
    for c in sim.clients:
        sim.method.download(c, message)
    ref = sim.clients[0].model.state_dict()
    for c in sim.clients[1:]:
        assert all(torch.equal(ref[n], t) for n, t in c.model.state_dict().items())


def test_local_sends_nothing(tiny_cfg, tmp_path):
    sim = build(tiny_cfg(method="local"), tmp_path)
    assert sim.method.upload(sim.clients[0], 1) is None and sim.initial_sync_bytes == 0
    assert sim.clients[0].model.unet is not None


def test_initial_sync_gives_every_client_the_same_shared_start(tiny_cfg, tmp_path):
    sim = build(tiny_cfg(), tmp_path)
    name = "unet.bottleneck.conv.3.weight"
    assert all(torch.equal(c.model.state_dict()[name], sim.clients[0].model.state_dict()[name]) for c in sim.clients)
    other = "unet.inc.0.weight"  # not shared: clients keep their own initialisation
    assert not torch.equal(sim.clients[0].model.state_dict()[other], sim.clients[1].model.state_dict()[other])


# floor(fraction x clients), at least one (FedAvg's max(C * K, 1)); 0.375 and 0.875 of 4 clients
# are 1.5 and 3.5, which Python's round() would make 2 and 4
@pytest.mark.parametrize("fraction, expected", [(1.0, 4), (0.5, 2), (0.01, 1), (0.375, 1), (0.875, 3), (0.75, 3)])
def test_participation_fraction(tiny_cfg, tmp_path, fraction, expected):
    sim = build(tiny_cfg(federated={"rounds": 2, "participation": fraction}), tmp_path)
    chosen = sim.method.configure_round(1, sim.clients, torch.Generator().manual_seed(0))
    assert len(chosen) == expected and len({c.index for c in chosen}) == expected


@pytest.mark.parametrize(
    "fraction, clients, expected", [(0.29, 100, 29), (0.1, 20, 2), (0.15, 20, 3), (0.5, 5, 2), (0.3, 5, 1), (0.05, 10, 1)]
)
def test_participant_count_is_the_floor_with_a_minimum_of_one(fraction, clients, expected):
    assert participants(fraction, clients) == expected  # 0.29 * 100 is 28.999999999999996 in binary


@pytest.mark.parametrize("method, extra", [("fedunet", {}), ("fml", {}), ("fedgh", {})])
def test_with_half_precision_payloads_the_server_keeps_what_it_sends(tiny_cfg, tmp_path, method, extra):
    sim = build(tiny_cfg(method=method, federated={"rounds": 2, "payload_dtype": "float16"}, **extra), tmp_path)
    sim.run_round(1)
    if method == "fedgh":
        server, client = sim.method.header.state_dict(), sim.clients[1].model.classifier.state_dict()
    else:
        server, client = sim.method.global_state, sim.method.shared(sim.clients[1])
    floats = [n for n, t in server.items() if t.is_floating_point()]
    assert floats and all(torch.equal(server[n].cpu(), client[n].cpu()) for n in floats)
    # and the values are fp16's: rounding them again changes nothing
    assert all(torch.equal(server[n], server[n].half().to(server[n].dtype)) for n in floats)


@pytest.mark.parametrize("method", ["fedunet", "fd", "fedproto"])
def test_payload_spec_is_the_template_in_the_payload_dtype_within_the_size_limit(tiny_cfg, tmp_path, method):
    sim = build(tiny_cfg(method=method, federated={"rounds": 2, "payload_dtype": "float16"}), tmp_path)
    c = sim.clients[0]
    spec = sim.method.upload_spec(c)
    sent = sim.method.upload(c, 1)
    assert spec.shapes == {k: tuple(t.shape) for k, t in sent.items()}
    assert {spec.dtypes[k] for k, t in sent.items() if t.is_floating_point()} == {"float16"}
    assert spec.max_bytes == sim.method.max_bytes(sent)
