"""Heterogeneous-FL baselines: what each sends, its aggregation math by hand, and that it learns."""

import math
from types import SimpleNamespace

import pytest
import torch
from test_federated import read_metrics
from torch import nn

from fedunet import methods, serialization
from fedunet.federated import Simulation, train
from fedunet.methods.base import Upload, clip_gradients
from fedunet.methods.fedkd import svd_compress, svd_compress_kernels
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
    # nearest-prototype inference (FedProto's default) lags the head early: 0.59 after 4 rounds, 0.83 after 8
    rounds = 8 if method == "fedproto" else 4
    summary = train(tiny_cfg(method=method, federated={"rounds": rounds}, dataset=bigger), tmp_path)
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
    sent = sim.method.upload(c, 1)
    assert {k: tuple(v.shape) for k, v in sent.items()} == expected
    row = sim.run_round(1)
    assert row["bytes_up"] == len(sim.clients) * len(serialization.encode(sent))


def test_fml_shares_exactly_the_meme_model(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fml")
    c = sim.clients[0]
    meme = c.aux["meme"].state_dict()
    sent = sim.method.upload(c, 1)
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
    out, _ = sim.method.aggregate(1, [Upload(None, a, 10.0), Upload(None, b, 1.0)])
    expected = torch.tensor([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 6.0]])  # class 2 from b only
    torch.testing.assert_close(out["logits"], expected)
    assert out["counts"].tolist() == [6, 2, 2]


def test_fedproto_weights_prototypes_by_class_counts(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto")
    p1, p2 = torch.zeros(C, K), torch.ones(C, K)
    out, _ = sim.method.aggregate(
        1,
        [
            Upload(None, {"protos": p1, "counts": torch.tensor([3, 0, 1])}, 1.0),
            Upload(None, {"protos": p2, "counts": torch.tensor([1, 2, 0])}, 1.0),
        ],
    )
    torch.testing.assert_close(out["protos"][:, 0], torch.tensor([0.25, 1.0, 0.0]))
    assert out["counts"].tolist() == [4, 2, 1]


def test_prototype_regularizer_pulls_features_to_global_prototypes(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto")
    c = sim.clients[0]
    x, y = next(iter(c.loader))
    plain = torch.nn.functional.cross_entropy(c.model(x), y)
    torch.testing.assert_close(sim.method.loss(c, x, y), plain)  # no global prototype yet: CE alone
    sim.method.receive_prototypes(c, torch.full((C, K), 5.0), torch.tensor([True, True, True]))
    assert sim.method.loss(c, x, y) > plain + 1.0  # lamda x MSE to far-away prototypes


def test_fedgh_server_trains_the_header_on_prototypes(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedgh", methods={"fedgh": {"server_epochs": 50}})
    protos = torch.eye(C, K) * 3
    uploads = [Upload(None, {"protos": protos, "counts": torch.tensor([1, 1, 1])}, 1.0)]
    message, numbers = sim.method.aggregate(1, uploads)
    logits = protos @ message["weight"].T + message["bias"]
    assert logits.argmax(1).tolist() == [0, 1, 2]
    assert numbers == {"prototypes": 3}  # the (prototype, class) pairs the header trained on
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
    message, numbers = method.aggregate(1, [Upload(None, {"protos": protos, "counts": torch.ones(C, dtype=torch.int64)}, 1.0)])
    nearest = torch.cdist(protos, message["protos"]).argmin(1)
    assert nearest.tolist() == [0, 1, 2]
    assert numbers == {"margin": pytest.approx(2.0), "prototypes": 3}  # the round's margin goes to metrics.csv


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
    sent = sim.method.upload(c, 1)
    weight = next(n for n, t in c.aux["mentee"].state_dict().items() if t.ndim == 4)
    m, n = c.aux["mentee"].state_dict()[weight].shape[0], c.aux["mentee"].state_dict()[weight][0].numel()
    k = sent[f"{weight}.S"].shape[0]
    assert sent[f"{weight}.U"].shape == (m, k) and sent[f"{weight}.V"].shape == (k, n) and 1 <= k <= min(m, n)
    row = sim.run_round(2)
    assert row["rejected"] == 0 and row["bytes_up"] > 0 and row["bytes_down"] > 0
    server = sim.method.global_state
    for client in sim.clients:
        for name, t in client.aux["mentee"].state_dict().items():
            torch.testing.assert_close(t.cpu(), server[name], rtol=0, atol=1e-6)


def test_fedkd_rejects_inconsistent_factor_ranks(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedkd")
    c = sim.clients[0]
    sent = sim.method.upload(c, 1)
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


# ---------------------------------------------------------------------------------------------
# Each baseline's loss on a tiny batch against its formula, computed by hand (plain Python
# floats), with the defaults and with the options that reproduce HtFLlib.


def log_softmax(z):
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def softmax(z):
    return [math.exp(v) for v in log_softmax(z)]


def ce(z, y):
    return -log_softmax(z)[y]


def kl_div(p_teacher, z_student):
    """KL(p_teacher || softmax(z_student)), summed over classes."""
    logq = log_softmax(z_student)
    return sum(p * (math.log(p) - lq) for p, lq in zip(p_teacher, logq) if p > 0)


def method_for(tiny_cfg, name, **hp):
    return methods.create(tiny_cfg(method=name, methods={name: hp}))


class FakeModel(nn.Module):
    """A model whose features and logits are given leaf tensors (the input is ignored)."""

    def __init__(self, features, logits):
        super().__init__()
        self.h = nn.Parameter(torch.tensor(features))
        self.z = nn.Parameter(torch.tensor(logits))

    def features(self, x):
        return self.h

    def classifier(self, h):
        return self.z

    def forward(self, x):
        return self.z


@pytest.mark.parametrize("target", ["softmax", "logits"])
def test_fd_loss_matches_the_formula(tiny_cfg, target):
    method = method_for(tiny_cfg, "fd", lamda=0.5, target=target)
    method.num_classes = 3
    z = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    y = [0, 2]
    g0 = [2.0, 0.0, -1.0]  # global logits of class 0; class 2 has none
    state = {
        "logit_sums": torch.zeros(3, 3),
        "logit_counts": torch.zeros(3, dtype=torch.int64),
        "global_logits": torch.tensor([g0, [0.0] * 3, [0.0] * 3]),
        "present": torch.tensor([True, False, False]),
        "any_present": True,
    }
    client = SimpleNamespace(logits=lambda x: x, state=state)
    got = method.loss(client, torch.tensor(z, requires_grad=True), torch.tensor(y))
    plain = (ce(z[0], 0) + ce(z[1], 2)) / 2
    if target == "softmax":  # only sample 0's class has a global logit; divided by the batch size
        distill = -sum(t * lq for t, lq in zip(softmax(g0), log_softmax(z[0]))) / 2
    else:  # HtFLlib: the raw logits are the target; sample 1 takes its own logits
        distill = (
            -sum(t * lq for t, lq in zip(g0, log_softmax(z[0]))) - sum(t * lq for t, lq in zip(z[1], log_softmax(z[1])))
        ) / 2
    assert float(got.detach()) == pytest.approx(plain + 0.5 * distill, rel=1e-6)
    # the logits of the round are accumulated per class for the upload
    assert state["logit_counts"].tolist() == [1, 0, 1]
    assert state["logit_sums"][2].tolist() == [0.0, 0.0, 3.0]


@pytest.mark.parametrize("target", ["softmax", "logits"])
def test_fd_adds_no_term_before_global_logits_arrive(tiny_cfg, target):
    """Round 1 (HtFLlib): CE alone; the download of counts tells the client, on the host, that
    global logits exist, and the term appears."""
    method = method_for(tiny_cfg, "fd", lamda=0.5, target=target)
    method.num_classes = 3
    state = {
        "logit_sums": torch.zeros(3, 3),
        "logit_counts": torch.zeros(3, dtype=torch.int64),
        "global_logits": torch.zeros(3, 3),
        "present": torch.zeros(3, dtype=torch.bool),
        "any_present": False,
    }
    client = SimpleNamespace(logits=lambda x: x, state=state, device=torch.device("cpu"))
    z, y = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])
    assert float(method.loss(client, z, y)) == pytest.approx(ce(z[0].tolist(), 0))
    method.download(client, {"logits": torch.tensor([[5.0, -5.0, 0.0]] * 3), "counts": torch.tensor([1, 0, 0])})
    assert state["any_present"] is True
    assert float(method.loss(client, z, y)) != pytest.approx(ce(z[0].tolist(), 0))


def test_fd_raw_logit_target_is_unbounded_below(tiny_cfg):
    """Why raw logits are not our default: with a target that has a negative entry, the term
    decreases without bound as the model pushes that logit down (here -1 * -M grows with M)."""
    method = method_for(tiny_cfg, "fd", lamda=1.0, target="logits")
    method.num_classes = 3
    state = {
        "logit_sums": torch.zeros(3, 3),
        "logit_counts": torch.zeros(3, dtype=torch.int64),
        "global_logits": torch.tensor([[2.0, -1.0, 0.0]] * 3),
        "present": torch.ones(3, dtype=torch.bool),
        "any_present": True,
    }
    client = SimpleNamespace(logits=lambda x: x, state=state)
    losses = [float(method.loss(client, torch.tensor([[0.0, -m, 0.0]]), torch.tensor([0]))) for m in (10.0, 100.0, 1000.0)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < -900
    soft = method_for(tiny_cfg, "fd", lamda=1.0)
    soft.num_classes = 3
    bounded = [float(soft.loss(client, torch.tensor([[0.0, -m, 0.0]]), torch.tensor([0]))) for m in (10.0, 1000.0)]
    assert min(bounded) > 0  # a cross-entropy against a distribution is never negative


@pytest.mark.parametrize("method_name", ["fedproto", "fedtgp"])
def test_prototype_loss_matches_the_formula(tiny_cfg, method_name):
    """CE + lamda * mean over batch x K of (feature - global prototype)^2; classes without a global
    prototype contribute zero to the sum but count in the mean (HtFLlib's MSELoss(proto_new, rep))."""
    method = method_for(tiny_cfg, method_name, lamda=3.0)
    f = [[1.0, 2.0], [3.0, -1.0]]
    y = [0, 1]
    model = SimpleNamespace(features=lambda x: x, classifier=lambda h: h)  # logits = features
    state = {"protos": torch.tensor([[0.0, 1.0], [9.0, 9.0]]), "present": torch.tensor([True, False]), "any_present": True}
    got = method.loss(SimpleNamespace(model=model, state=state), torch.tensor(f, requires_grad=True), torch.tensor(y))
    plain = (ce(f[0], 0) + ce(f[1], 1)) / 2
    mse = ((1 - 0) ** 2 + (2 - 1) ** 2 + 0 + 0) / 4
    assert float(got.detach()) == pytest.approx(plain + 3.0 * mse, rel=1e-6)


@pytest.mark.parametrize("htfllib", [False, True])
def test_fml_loss_and_gradients_match_the_formula(tiny_cfg, htfllib):
    hp = dict(alpha=0.3, beta=0.6)
    if htfllib:
        hp.update(kl_reduction="mean", gradients="both")
    method = method_for(tiny_cfg, "fml", **hp)
    z_p, z_m = [1.0, 0.0], [0.0, 2.0]
    private, meme = FakeModel([[0.0]], [z_p]), FakeModel([[0.0]], [z_m])
    client = SimpleNamespace(logits=private, aux={"meme": meme})
    loss = method.loss(client, None, torch.tensor([0]))
    p_p, p_m = softmax(z_p), softmax(z_m)
    classes = 2 if htfllib else 1  # KLDivLoss(reduction="mean") divides by batch x classes
    kl_p, kl_m = kl_div(p_m, z_p) / classes, kl_div(p_p, z_m) / classes
    hand = 0.3 * ce(z_p, 0) + 0.7 * kl_p + 0.6 * ce(z_m, 0) + 0.4 * kl_m
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-6)
    loss.backward()
    # d/dz_private: 0.3 (p_p - e_0) + 0.7 (p_p - p_m); the meme's KL reaches it only with "both"
    own = [0.3 * (p - (i == 0)) + 0.7 * (p - q) for i, (p, q) in enumerate(zip(p_p, p_m))]
    if not htfllib:
        assert private.z.grad[0].tolist() == pytest.approx(own, rel=1e-5, abs=1e-6)
    else:
        # theirs: (loss + loss_g).backward() with nothing detached; the extra gradient is
        # 0.4 * d KL(p_p || p_m) / d z_p / 2 classes, by central differences
        def kl_m_of(zp):
            return kl_div(softmax(zp), z_m) / 2

        eps = 1e-5

        def bumped(i, sign):
            return [v + sign * eps * (j == i) for j, v in enumerate(z_p)]

        extra = [0.4 * (kl_m_of(bumped(i, 1)) - kl_m_of(bumped(i, -1))) / (2 * eps) for i in range(2)]
        own_mean = [0.3 * (p - (i == 0)) + 0.7 * (p - q) / 2 for i, (p, q) in enumerate(zip(p_p, p_m))]
        assert private.z.grad[0].tolist() == pytest.approx([a + b for a, b in zip(own_mean, extra)], rel=1e-4)


@pytest.mark.parametrize("htfllib", [False, True])
def test_fedkd_loss_and_gradients_match_the_formula(tiny_cfg, htfllib):
    hp = dict(kl_reduction="mean", gradients="both") if htfllib else {}
    method = method_for(tiny_cfg, "fedkd", **hp)
    z_t, z_s, h_t, h_s = [1.0, 0.0], [0.0, 0.0], [1.0, 2.0], [1.0, 1.0]
    mentor, mentee = FakeModel([h_t], [z_t]), FakeModel([h_s], [z_s])
    w_h = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        w_h.weight.copy_(torch.eye(2))
    client = SimpleNamespace(model=mentor, aux={"mentee": mentee, "hidden_map": w_h})
    loss = method.loss(client, None, torch.tensor([0]))
    p_t, p_s = softmax(z_t), softmax(z_s)
    s = ce(z_t, 0) + ce(z_s, 0)
    classes = 2 if htfllib else 1
    mse = ((1 - 1) ** 2 + (2 - 1) ** 2) / 2  # MSE(H_t, W_h H_s) = 0.5
    hand = s + (kl_div(p_s, z_t) / classes + kl_div(p_t, z_s) / classes + 2 * mse) / s
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-6)
    loss.backward()
    if not htfllib:
        # each loss trains its own model; s is a constant weight
        approx = lambda v: pytest.approx(v, rel=1e-5, abs=1e-6)  # noqa: E731
        assert mentor.z.grad[0].tolist() == approx([(p - (i == 0)) + (p - q) / s for i, (p, q) in enumerate(zip(p_t, p_s))])
        assert mentee.z.grad[0].tolist() == approx([(p - (i == 0)) + (p - q) / s for i, (p, q) in enumerate(zip(p_s, p_t))])
        assert mentor.h.grad[0].tolist() == approx([0.0, 1.0 / s])  # (H_t - W H_s) / s, once
        assert mentee.h.grad[0].tolist() == approx([0.0, -1.0 / s])  # W^T (W H_s - H_t) / s, once
        assert w_h.weight.grad.tolist() == [approx([0.0, 0.0]), approx([-2.0 / s, -2.0 / s])]  # from both losses
    else:
        # HtFLlib: s is differentiated too, and both hidden terms reach both models
        assert mentor.h.grad[0].tolist() == pytest.approx([0.0, 2.0 / s], rel=1e-5, abs=1e-6)
        assert mentee.h.grad[0].tolist() == pytest.approx([0.0, -2.0 / s], rel=1e-5, abs=1e-6)
        # d/dz_t of s + D/s with D the distillation sum: (1 - D/s^2) (p_t - e_0) + dD/dz_t / s
        d = hand - s
        d_s = d * s  # D itself
        dkl = [(p - q) / 2 for p, q in zip(p_t, p_s)]  # d KL(p_s||p_t)/2 / dz_t
        eps = 1e-5

        def other(zt):
            return kl_div(softmax(zt), z_s) / 2

        dkl2 = [
            (other([v + eps * (j == i) for j, v in enumerate(z_t)]) - other([v - eps * (j == i) for j, v in enumerate(z_t)]))
            / (2 * eps)
            for i in range(2)
        ]
        expect = [(1 - d_s / s**2) * (p - (i == 0)) + (a + b) / s for i, (p, a, b) in enumerate(zip(p_t, dkl, dkl2))]
        assert mentor.z.grad[0].tolist() == pytest.approx(expect, rel=1e-4)


def test_gradient_clipping_caps_each_models_norm_before_every_step():
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    client = SimpleNamespace(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    clip_gradients(client, [model], 1.0)
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0]])  # norm 5
    client.optimizer.step()
    assert model.weight.detach()[0].tolist() == pytest.approx([-0.06, -0.08, 0.0])  # lr x grad / 5
    clip_gradients(client, [model], None)  # no clipping: nothing registered
    model.weight.grad = torch.tensor([[0.3, 0.4, 0.0]])  # under the cap: unchanged
    client.optimizer.step()
    assert model.weight.detach()[0].tolist() == pytest.approx([-0.09, -0.12, 0.0])


def test_fedproto_options_aggregation_mean_and_prototype_inference(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto", methods={"fedproto": {"aggregation": "mean"}})
    p1, p2 = torch.zeros(C, K), torch.ones(C, K)
    out, _ = sim.method.aggregate(
        1,
        [
            Upload(None, {"protos": p1, "counts": torch.tensor([3, 0, 1])}, 5.0),
            Upload(None, {"protos": p2, "counts": torch.tensor([1, 2, 0])}, 1.0),
        ],
    )
    # HtFLlib: the plain mean over the clients that hold the class, whatever their counts
    torch.testing.assert_close(out["protos"][:, 0], torch.tensor([0.5, 1.0, 0.0]))
    # default inference: the nearest global prototype (HtFLlib, paper), not the head
    method = method_for(tiny_cfg, "fedproto")
    client = SimpleNamespace(
        model=SimpleNamespace(features=lambda x: x),
        logits=lambda x: torch.zeros(len(x), 2),
        state={"protos": torch.tensor([[0.0, 0.0], [4.0, 4.0]]), "present": torch.tensor([True, True]), "any_present": True},
    )
    scores = method.predict(client, torch.tensor([[1.0, 1.0], [3.0, 2.5]]))
    assert scores.argmax(1).tolist() == [0, 1]
    assert scores[0].tolist() == pytest.approx([-2.0, -18.0])  # minus squared distances


def test_fedproto_prototypes_during_training_are_the_step_features(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedproto", methods={"fedproto": {"prototypes": "during"}})
    c = sim.clients[0]
    seen = []
    features = c.model.features

    def recording(x):
        f = features(x)
        seen.append(f.detach().clone())
        return f

    c.model.features = recording
    labels = []
    c.train(1, lambda client, x, y: (labels.append(y), sim.method.loss(client, x, y))[1])
    sent = sim.method.upload(c, 1)
    f, y = torch.cat(seen), torch.cat(labels)
    for k in range(C):
        if (y == k).any():
            torch.testing.assert_close(sent["protos"][k], f[y == k].mean(0))
    assert sent["counts"].tolist() == torch.bincount(y, minlength=C).tolist()
    again = sim.method.upload(c, 1)  # upload is pure: the sums stay until the next round begins
    assert all(torch.equal(again[k], sent[k]) for k in sent)
    sim.method.begin_round(c, 2)
    assert int(c.state["proto_counts"].sum()) == 0 and not c.state["proto_sums"].any()


@pytest.mark.parametrize("method, extra", [("fd", {}), ("fd", {"target": "logits"}), ("fedproto", {"prototypes": "during"})])
def test_uploads_are_pure_and_accumulators_reset_when_a_round_begins(tiny_cfg, tmp_path, method, extra):
    """What local training accumulates for the upload is reset in begin_round, never in upload: two
    uploads are equal, and a round's upload holds that round's training only."""
    sim = built(tiny_cfg, tmp_path, method, methods={method: extra})
    c = sim.clients[0]
    sums = "logit_sums" if method == "fd" else "proto_sums"
    for r in (1, 2):
        sim.method.begin_round(c, r)
        assert not c.state[sums].any()
        stats = c.train(1, sim.method.loss)
        first, second = sim.method.upload(c, r), sim.method.upload(c, r)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
        assert int(first["counts"].sum()) == stats.samples  # this round's samples, once


def rank_one(shape, scale):
    m, n = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    u = torch.linspace(1.0, 2.0, m)
    v = torch.linspace(-1.0, 1.0, n) * scale + 0.5
    return torch.outer(u, v).reshape(shape)


@pytest.mark.parametrize("aggregation, weights", [("weighted", (3.0, 1.0)), ("mean", (1.0, 1.0))])
def test_fedkd_aggregate_is_the_compressed_mean_of_the_updates(tiny_cfg, tmp_path, aggregation, weights):
    sim = built(tiny_cfg, tmp_path, "fedkd", methods={"fedkd": {"aggregation": aggregation}})
    method = sim.method
    before = {k: v.clone() for k, v in method.global_state.items()}
    updates = []
    for scale in (1.0, -3.0):  # rank-one matrices with a common left factor: their means are rank one
        updates.append(
            {
                k: (rank_one(tuple(t.shape), scale) if t.ndim >= 2 else torch.full(t.shape, scale))
                if t.is_floating_point()
                else t.clone()
                for k, t in before.items()
            }
        )
    uploads = [Upload(None, method.compress(u, 1), w) for u, w in zip(updates, (3.0, 1.0))]
    message, numbers = method.aggregate(1, uploads)
    assert numbers == {"energy": method.energy(1), "rank_mean": 1.0}  # every matrix of the message has rank one
    received = method.decompress(message)
    wa, wb = weights[0] / sum(weights), weights[1] / sum(weights)
    for name, t in before.items():
        if t.is_floating_point():
            hand = wa * updates[0][name] + wb * updates[1][name]
            torch.testing.assert_close(received[name], hand, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(method.global_state[name], t + hand, rtol=1e-4, atol=1e-5)
            if t.ndim >= 2:
                assert message[f"{name}.S"].shape == (1,)  # rank one survives compression
    # the weighted and the plain mean differ, so each case tells them apart
    name = next(n for n, t in before.items() if t.ndim >= 2)
    assert not torch.allclose(0.75 * updates[0][name] + 0.25 * updates[1][name], 0.5 * updates[0][name] + 0.5 * updates[1][name])


def test_per_kernel_svd_rank_and_bytes():
    # two 5x5 kernels: diag(3, 1) and diag(1, 0); squared singular values per index, summed over
    # kernels: [9 + 1, 1 + 0] = [10, 1], so energy 10/11 = 0.909 at rank 1
    w = torch.zeros(2, 1, 5, 5)
    w[0, 0, 0, 0], w[0, 0, 1, 1], w[1, 0, 0, 0] = 3.0, 1.0, 1.0
    u, s, v = svd_compress_kernels(w, 0.95)
    assert u.shape == (2, 1, 5, 2) and s.shape == (2, 1, 2) and v.shape == (2, 1, 2, 5)
    torch.testing.assert_close((u * s.unsqueeze(-2)) @ v, w)
    u, s, v = svd_compress_kernels(w, 0.90)
    assert s.shape == (2, 1, 1)
    # bytes of a (64, 32, 5, 5) conv at rank k: 64 * 32 * k * (5 + 1 + 5) floats, against 64 * 32 * 25 raw;
    # rank 5 (full) costs 2.2x the raw tensor, rank 2 is the largest that saves
    torch.manual_seed(0)
    conv = torch.randn(64, 32, 5, 5)
    for energy in (0.5, 0.9, 0.999):
        u, s, v = svd_compress_kernels(conv, energy)
        k = s.shape[-1]
        assert sum(t.numel() * 4 for t in (u, s, v)) == 64 * 32 * k * 11 * 4
        err = torch.linalg.norm(conv - (u * s.unsqueeze(-2)) @ v) ** 2 / torch.linalg.norm(conv) ** 2
        assert err <= 1 - energy + 1e-5
        if k > 1:  # and k - 1 would not have reached the energy
            sv = torch.linalg.svdvals(conv) ** 2
            assert float(sv[..., : k - 1].sum() / sv.sum()) < energy


@pytest.mark.parametrize("hp", [{"svd": "per_kernel"}, {"compress": "parameters", "svd": "per_kernel", "aggregation": "mean"}])
def test_fedkd_htfllib_options_run_and_keep_mentees_identical(tiny_cfg, tmp_path, hp):
    sim = built(tiny_cfg, tmp_path, "fedkd", methods={"fedkd": hp})
    c = sim.clients[0]
    sent = sim.method.upload(c, 1)
    conv = next(n for n, t in c.aux["mentee"].state_dict().items() if t.ndim == 4)
    o, i, kh, kw = c.aux["mentee"].state_dict()[conv].shape
    k = sent[f"{conv}.S"].shape[-1]
    assert sent[f"{conv}.U"].shape == (o, i, kh, k) and sent[f"{conv}.V"].shape == (o, i, k, kw)
    for r in (1, 2):
        sim.method.configure_round(r, sim.clients, sim.server_generator)
        row = sim.run_round(r)
        assert row["rejected"] == 0
    server = sim.method.global_state
    for client in sim.clients:
        for name, t in client.aux["mentee"].state_dict().items():
            torch.testing.assert_close(t.cpu().float(), server[name].float(), rtol=0, atol=1e-5)
    if hp.get("compress") == "parameters":  # the message is the compressed mean of the parameters
        assert sim.method.upload(sim.clients[1], 2).keys() == sent.keys()


@pytest.mark.parametrize(
    "hp, round_, expected",
    [
        ({}, 1, 0.95 + 0.03 / 4),  # official code: start + r / R (end - start), R = 4 rounds
        ({}, 4, 0.98),
        ({"energy_schedule": "htfllib"}, 1, 0.95),  # HtFLlib: start + (r - 1) / R (end - start)
        ({"energy_schedule": "htfllib", "energy_rounds": 2000}, 4, 0.95 + 0.03 * 3 / 2000),
        ({"energy_rounds": 2}, 4, 0.98),  # held at the end after R rounds
    ],
)
def test_fedkd_energy_schedule(tiny_cfg, hp, round_, expected):
    method = methods.create(tiny_cfg(method="fedkd", federated={"rounds": 4}, methods={"fedkd": hp}))
    assert method.energy(round_) == pytest.approx(expected)


def test_meme_and_mentee_default_to_the_fedavg_cnn_and_client0_follows_client_0(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fml")
    assert all(c.aux["meme"].spec.architecture == "fedavg-cnn" for c in sim.clients)
    sim = built(tiny_cfg, tmp_path / "b", "fedkd", methods={"fedkd": {"mentee": "client0"}})
    assert all(c.aux["mentee"].spec.architecture == sim.clients[0].architecture for c in sim.clients)


def test_energy_rank_rules():
    from fedunet.methods.fedkd import energy_rank

    power = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative shares 0.4, 0.7, 0.9, 1.0
    assert [energy_rank(power, e) for e in (0.7, 0.9, 0.95)] == [2, 3, 4]  # fewest reaching e
    # HtFLlib: fewest n < 4 whose share exceeds e strictly; none: rank 0 (the tensor arrives as zeros)
    assert [energy_rank(power, e, "htfllib") for e in (0.7, 0.9, 0.95)] == [3, 0, 0]
    assert energy_rank(torch.zeros(3), 0.95) == energy_rank(torch.zeros(3), 0.95, "htfllib") == 1


def test_fedkd_htfllib_rank_rule_sends_an_isotropic_head_as_zeros(tiny_cfg, tmp_path):
    sim = built(tiny_cfg, tmp_path, "fedkd", methods={"fedkd": {"rank_rule": "htfllib", "compress": "parameters"}})
    c = sim.clients[0]
    head = "classifier.weight"
    with torch.no_grad():  # C = 3 equal singular values: only the full rank reaches 0.95
        c.aux["mentee"].classifier.weight.copy_(torch.eye(C, c.aux["mentee"].classifier.in_features))
    sent = sim.method.upload(c, 1)
    assert sent[f"{head}.S"].shape == (0,)
    tensors, _ = serialization.decode(serialization.encode(sent), sim.method.upload_spec(c))
    sim.method.check_upload(c, tensors)  # rank 0 is a valid HtFLlib payload
    assert torch.equal(sim.method.decompress(tensors)[head], torch.zeros(C, c.aux["mentee"].classifier.in_features))
    plain = built(tiny_cfg, tmp_path / "b", "fedkd", methods={"fedkd": {"compress": "parameters"}})
    with pytest.raises(serialization.PayloadError, match="ranks"):
        plain.method.check_upload(plain.clients[0], tensors)
