"""The work ``fedunet estimate`` counts (fedunet/workload.py) is the engine's: samples trained and
evaluated, per client and round, against a hooked simulation."""

from __future__ import annotations

import pytest
from helpers import seg_tiny_raw, tiny_raw

from fedunet import config
from fedunet.federated import Simulation
from fedunet.workload import run_work


def count_forward_samples(sim: Simulation) -> dict:
    """Samples through every client's backbone, by model (client model or extra) and mode."""
    counts: dict = {}

    def hook(role):
        def pre(module, args):
            key = (role, module.training)
            counts[key] = counts.get(key, 0) + args[0].shape[0]

        return pre

    for c in sim.clients:
        c.model.backbone.register_forward_pre_hook(hook("model"))
        for name, m in c.aux.items():
            if hasattr(m, "backbone"):
                m.backbone.register_forward_pre_hook(hook(name))
    return counts


@pytest.mark.parametrize(
    "method, sections",
    [
        ("fedunet", {}),  # U-Net: validation, diagnostics and global evaluation
        ("fedunet", {"eval": {"every": 2, "global": False, "diagnostics": False}, "federated": {"rounds": 3}}),
        ("fml", {}),  # an extra model trained beside
        ("fedproto", {}),  # the prototype pass after training
    ],
)
def test_the_counted_work_is_the_engines(tmp_path, method, sections):
    check_counted_work(tiny_raw(method=method, **sections), tmp_path)


def test_the_counted_work_of_a_segmentation_run_is_the_engines(tmp_path):
    """Canvases trained and evaluated, and the expected canvases of composites close to the real ones."""
    check_counted_work(seg_tiny_raw(), tmp_path)
    cfg = config.validate(seg_tiny_raw())
    sim = Simulation(cfg, tmp_path / "built")
    sim.build()
    expected = run_work(cfg)
    epochs = cfg["federated"]["local_epochs"]
    assert sum(c.train for c in expected.clients) / epochs == pytest.approx(sum(c.num_train for c in sim.clients), rel=0.1)


def check_counted_work(raw: dict, tmp_path):
    method = raw["method"]
    cfg = config.validate(raw)
    sim = Simulation(cfg, tmp_path)
    sim.build()
    counts = count_forward_samples(sim)
    clients = [{"n_train": c.num_train, "n_test": c.num_test, "n_val": len(c.val_indices)} for c in sim.clients]
    for r in range(1, cfg["federated"]["rounds"] + 1):
        sim.rows.append(sim.run_round(r))
    work = run_work(cfg, "tiny", clients)
    trained = counts.get(("model", True), 0)
    assert trained == pytest.approx(work.train_samples(), abs=0.5)
    assert counts.get(("model", False), 0) == pytest.approx(work.eval_samples(), abs=0.5)
    if method == "fml":
        assert counts[("meme", True)] == trained and len(work.clients[0].aux) == 1


def test_partial_participation_scales_the_expected_training():
    full = run_work(config.validate(tiny_raw()))
    half = run_work(config.validate(tiny_raw(federated={"rounds": 2, "participation": 0.5})))
    assert half.train_samples() == pytest.approx(full.train_samples() / 2)
    assert half.eval_samples() == pytest.approx(full.eval_samples()), "every client is evaluated"


def test_expected_client_shares_add_up_to_the_dataset():
    cfg = config.validate(tiny_raw())
    work = run_work(cfg)
    n = cfg["dataset"]["synthetic"]["train_size"]
    per_eval = sum(c.eval for c in work.clients)
    n_test = sum(round(n / 4 * 0.25) for _ in range(4))
    assert per_eval == pytest.approx(n_test * 4 + (n - n_test) * 0.1 + 4 * 60, rel=0.02)  # pers + 3 diagnostics, val, global
    assert sum(c.train for c in work.clients) == pytest.approx((n - n_test) * 0.9, rel=0.02)


def test_diagnostics_every_counts_only_the_rounds_that_run_them():
    every_round = run_work(config.validate(tiny_raw(federated={"rounds": 6})))
    sparse = run_work(config.validate(tiny_raw(federated={"rounds": 6}, eval={"diagnostics_every": 3})))
    none = run_work(config.validate(tiny_raw(federated={"rounds": 6}, eval={"diagnostics": False})))
    diag_every_round = every_round.eval_samples() - none.eval_samples()
    assert diag_every_round > 0
    # rounds 3 and 6 of 6 run the diagnostics
    assert sparse.eval_samples() - none.eval_samples() == pytest.approx(diag_every_round * 2 / 6)
