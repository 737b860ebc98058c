"""Heterogeneous-FL baselines: what each sends, its aggregation math by hand, and that it learns."""

import pytest
import torch
from test_federated import read_metrics

from fedunet import serialization
from fedunet.federated import Simulation, train
from fedunet.methods.base import Upload
from fedunet.methods.fedkd import svd_compress
from fedunet.methods.fedtgp import FedTGP

BASELINES = ["lg-fedavg", "fd", "fml", "fedkd", "fedproto", "fedgh", "fedtgp"]
C, K = 3, 512  # the tiny config's classes and the default common feature width


def built(tiny_cfg, tmp_path, method, **sections):
    sim = Simulation(tiny_cfg(method=method, **sections), tmp_path)
    sim.build()
    return sim


@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_learns_on_synthetic_data(tiny_cfg, tmp_path, method):
    bigger = {
        "name": "synthetic",
        "synthetic": {"num_classes": 3, "channels": 3, "size": 16, "train_size": 1200, "test_size": 300},
    }
    summary = train(tiny_cfg(method=method, federated={"rounds": 4}, dataset=bigger), tmp_path)
    rows = summary["final"]
    assert rows["rejected"] == 0 and not summary["events"]
    assert rows["pers_acc"] > 0.7 and rows["global_acc"] > 0.5, rows  # chance is 1/3
    assert summary["communication"]["total_bytes_up"] > 0


@pytest.mark.parametrize(
    "method, expected",
    [
        ("lg-fedavg", {"classifier.weight": (C, K), "classifier.bias": (C,)}),
        ("fd", {"logits": (C, C), "counts": (C,)}),
        ("fedproto", {"protos": (C, K), "counts": (C,)}),
        ("fedgh", {"protos": (C, K), "counts": (C,)}),
        ("fedtgp", {"protos": (C, K), "counts": (C,)}),
    ],
)
def test_uploads_have_the_documented_shapes_and_bytes(tiny_cfg, tmp_path, method, expected):
    sim = built(tiny_cfg, tmp_path, method)
    c = sim.clients[1]
    c.train(1, sim.method.loss)
    sent = sim.method.upload(c)
    assert {k: tuple(v.shape) for k, v in sent.items()} == expected
    row = sim.run_round(1)
    assert row["bytes_up"] == len(sim.clients) * len(serialization.encode(sent))


def test_fml_shares_exactly_the_meme_model(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fml")
    c = sim.clients[0]
    meme = c.aux["meme"].state_dict()
    sent = sim.method.upload(c)
    assert set(sent) == set(meme) and all(sent[k].data_ptr() == meme[k].data_ptr() for k in sent)
    assert sum(t.numel() for t in sent.values()) < sum(t.numel() for t in c.model.state_dict().values())
    # the private model is not touched by aggregation; every meme ends identical
    private = {k: v.clone() for k, v in c.model.state_dict().items()}
    sim.run_round(1)
    ref = sim.clients[0].aux["meme"].state_dict()
    for other in sim.clients[1:]:
        assert all(torch.equal(ref[k], v) for k, v in other.aux["meme"].state_dict().items())
    assert any(not torch.equal(private[k], v) for k, v in c.model.state_dict().items())  # trained locally


def test_fd_aggregates_per_class_over_the_clients_that_have_the_class(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fd")
    a = {"logits": torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [9.0, 9, 9]]), "counts": torch.tensor([5, 1, 0])}
    b = {"logits": torch.tensor([[3.0, 0, 0], [0, 4.0, 0], [0.0, 0, 6]]), "counts": torch.tensor([1, 1, 2])}
    out = sim.method.aggregate([Upload(None, a, 10.0), Upload(None, b, 1.0)])
    expected = torch.tensor([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 6.0]])  # class 2 from b only
    torch.testing.assert_close(out["logits"], expected)
    assert out["counts"].tolist() == [6, 2, 2]


def test_fedproto_weights_prototypes_by_class_counts(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto")
    p1, p2 = torch.zeros(C, K), torch.ones(C, K)
    out = sim.method.aggregate(
        [
            Upload(None, {"protos": p1, "counts": torch.tensor([3, 0, 1])}, 1.0),
            Upload(None, {"protos": p2, "counts": torch.tensor([1, 2, 0])}, 1.0),
        ]
    )
    torch.testing.assert_close(out["protos"][:, 0], torch.tensor([0.25, 1.0, 0.0]))
    assert out["counts"].tolist() == [4, 2, 1]


def test_prototype_regularizer_pulls_features_to_global_prototypes(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto")
    c = sim.clients[0]
    x, y = next(iter(c.loader))
    plain = torch.nn.functional.cross_entropy(c.model(x), y)
    c.state["protos"] = torch.full((C, K), 5.0)
    c.state["present"] = torch.tensor([True, True, True])
    assert sim.method.loss(c, x, y) > plain + 1.0  # lamda 10 x MSE to far-away prototypes


def test_fedgh_server_trains_the_header_on_prototypes(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedgh", methods={"fedgh": {"server_epochs": 50}})
    protos = torch.eye(C, K) * 3
    uploads = [Upload(None, {"protos": protos, "counts": torch.tensor([1, 1, 1])}, 1.0)]
    message = sim.method.aggregate(uploads)
    logits = protos @ message["weight"].T + message["bias"]
    assert logits.argmax(1).tolist() == [0, 1, 2]
    sim.method.download(sim.clients[2], message)
    assert torch.equal(sim.clients[2].model.classifier.weight, message["weight"])


def test_fedtgp_margin_and_trained_global_prototypes(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedtgp", methods={"fedtgp": {"server_epochs": 200, "margin_threshold": 100.0}})
    method: FedTGP = sim.method
    protos = torch.zeros(C, K)
    protos[0, 0], protos[1, 0], protos[2, 0] = 0.0, 3.0, 10.0  # class gaps 3, 3, 7
    labels = torch.arange(C)
    assert method.margin(protos, labels) == pytest.approx(7.0)
    method.hp = {**method.hp, "margin_threshold": 2.0}
    assert method.margin(protos, labels) == pytest.approx(2.0)
    message = method.aggregate([Upload(None, {"protos": protos, "counts": torch.ones(C, dtype=torch.int64)}, 1.0)])
    nearest = torch.cdist(protos, message["protos"]).argmin(1)
    assert nearest.tolist() == [0, 1, 2]


def test_svd_compression_keeps_the_requested_energy():
    torch.manual_seed(0)
    m = torch.randn(40, 8) @ torch.randn(8, 30) + 0.01 * torch.randn(40, 30)
    u, s, v = svd_compress(m, 0.95)
    assert u.shape[1] == s.shape[0] == v.shape[0] <= 8
    err = torch.linalg.norm(m - (u * s) @ v) ** 2 / torch.linalg.norm(m) ** 2
    assert err <= 0.05 + 1e-6
    u, s, v = svd_compress(torch.zeros(5, 4), 0.95)
    assert s.shape == (1,) and float(s[0]) == 0.0


def test_fedkd_sends_factors_and_keeps_every_mentee_identical(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedkd")
    c = sim.clients[0]
    c.train(1, sim.method.loss)
    sent = sim.method.upload(c)
    weight = next(n for n, t in c.aux["mentee"].state_dict().items() if t.ndim == 4)
    m, n = c.aux["mentee"].state_dict()[weight].shape[0], c.aux["mentee"].state_dict()[weight][0].numel()
    k = sent[f"{weight}.S"].shape[0]
    assert sent[f"{weight}.U"].shape == (m, k) and sent[f"{weight}.V"].shape == (k, n) and 1 <= k <= min(m, n)
    sim.run_round(2)
    server = sim.method.global_state
    for client in sim.clients:
        for name, t in client.aux["mentee"].state_dict().items():
            torch.testing.assert_close(t.cpu(), server[name], rtol=0, atol=1e-6)
    # the aggregate is the compressed sample-weighted mean of the decompressed updates
    assert row_bytes_match(sim)


def row_bytes_match(sim) -> bool:
    row = sim.run_round(3)
    return row["bytes_up"] > 0 and row["bytes_down"] > 0 and row["rejected"] == 0


def test_fedkd_rejects_inconsistent_factor_ranks(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedkd")
    c = sim.clients[0]
    sent = sim.method.upload(c)
    weight = next(n[: -len(".S")] for n in sent if n.endswith(".S"))
    sent[f"{weight}.S"] = torch.ones(sent[f"{weight}.S"].shape[0] + 1)
    tensors, _ = serialization.decode(serialization.encode(sent), sim.method.upload_spec(c))
    with pytest.raises(serialization.PayloadError, match="inconsistent SVD factor ranks"):
        sim.method.check_upload(c, tensors)


@pytest.mark.parametrize("method", ["fd", "fml", "fedkd", "fedproto", "fedgh", "fedtgp", "lg-fedavg"])
def test_baselines_resume_bit_identically(tiny_cfg, tmp_path, method):
    cfg = tiny_cfg(method=method, federated={"rounds": 3})
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after=1)
    train(cfg, tmp_path / "b", resume=True)
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
