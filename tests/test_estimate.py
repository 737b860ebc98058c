"""``fedunet estimate``: the work it counts is the engine's, its prices hold on this machine, and it
prices the committed study configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_raw

from fedunet import config, estimate
from fedunet.federated import Simulation

ROOT = Path(__file__).resolve().parent.parent


def fedunet(*args):
    return subprocess.run([sys.executable, "-m", "fedunet", *args], capture_output=True, text=True, cwd=ROOT, timeout=900)


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
    raw = tiny_raw(method=method, **sections)
    cfg = config.validate(raw)
    sim = Simulation(cfg, tmp_path)
    sim.build()
    counts = count_forward_samples(sim)
    clients = [{"n_train": c.num_train, "n_test": c.num_test, "n_val": len(c.val_indices)} for c in sim.clients]
    for r in range(1, cfg["federated"]["rounds"] + 1):
        sim.rows.append(sim.run_round(r))
    work = estimate.run_work(cfg, "tiny", clients)
    trained = counts.get(("model", True), 0)
    assert trained == pytest.approx(work.train_samples(), abs=0.5)
    assert counts.get(("model", False), 0) == pytest.approx(work.eval_samples(), abs=0.5)
    if method == "fml":
        assert counts[("meme", True)] == trained and len(work.clients[0].aux) == 1


def test_partial_participation_scales_the_expected_training():
    full = estimate.run_work(config.validate(tiny_raw()))
    half = estimate.run_work(config.validate(tiny_raw(federated={"rounds": 2, "participation": 0.5})))
    assert half.train_samples() == pytest.approx(full.train_samples() / 2)
    assert half.eval_samples() == pytest.approx(full.eval_samples()), "every client is evaluated"


def test_expected_client_shares_add_up_to_the_dataset():
    cfg = config.validate(tiny_raw())
    work = estimate.run_work(cfg)
    n = cfg["dataset"]["synthetic"]["train_size"]
    per_eval = sum(c.eval for c in work.clients)
    n_test = sum(round(n / 4 * 0.25) for _ in range(4))
    assert per_eval == pytest.approx(n_test * 3 + (n - n_test) * 0.1 + 4 * 60, rel=0.02)  # pers + 2 diagnostics, val, global
    assert sum(c.train for c in work.clients) == pytest.approx((n - n_test) * 0.9, rel=0.02)


def test_estimate_is_within_25_percent_of_real_runs_on_this_machine(tmp_path):
    """Two short runs of the quick study's kind (narrow VGGs beside a U-Net, 1 thread), timed; then
    their cost estimated from throughput measured now, on the same machine."""
    runs = []
    for i, (method, archs) in enumerate([("fedunet", ["vgg11", "vgg13", "vgg16", "vgg19"]), ("local", ["vgg16", "resnet18"])]):
        raw = tiny_raw(
            method=method,
            dataset={
                "name": "synthetic",
                "synthetic": {"num_classes": 10, "channels": 1, "size": 28, "train_size": 1600, "test_size": 400},
            },
            model={"architectures": archs, "width": 0.125, "unet": {"d": 64}},
            federated={"rounds": 3},
            training={"batch_size": 64, "crop_padding": 2},
            eval={"batch_size": 1000},
        )
        raw["runtime"]["checkpoint_every"] = 0
        sim = Simulation(config.validate(raw), tmp_path / str(i))
        runs.append(sim.run())
    finished = [(s, estimate.run_work_from_summary(s)) for s in runs]
    prices = estimate.measure_prices([w for _, w in finished], "cpu", threads=1, steps=5)
    check = estimate.check_against(finished, prices)
    assert 0.75 <= check["ratio"] <= 1.25, check


def test_cli_prices_the_committed_study_configs():
    for study in ("config/quick.yaml", "config/config.yaml"):
        r = fedunet("estimate", study, "--tflops", "10")
        assert r.returncode == 0, r.stderr
        for part in ("total (unique)", "mem_mb >=", "runtime >=", "heterogeneous", "bottleneck"):
            assert part in r.stdout, (study, part, r.stdout)
    paper = fedunet("estimate", "config/config.yaml", "--tflops", "10")
    assert "GPU-h" in paper.stdout and "GPU with >=" in paper.stdout, "the paper study asks for one GPU per job"


def test_cli_estimate_json_and_given_images_per_s(tmp_path):
    out = tmp_path / "est.json"
    r = fedunet("estimate", "config/smoke.yaml", "--images-per-s", "cnn=1000", "--tflops", "0.05", "--json", str(out), "--runs")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["totals"]["runs"] >= 1 and data["totals"]["job_s"] > 0
    assert data["prices"]["given_images_per_s"] == {"cnn": 1000.0}
    assert set(data["experiments"]) and data["slurm"]["mem_mb"] >= 1000
    bad = fedunet("estimate", "config/smoke.yaml")
    assert bad.returncode == 2 and "--measure" in bad.stderr and "Traceback" not in bad.stderr
    missing = fedunet("estimate", "nope.yaml", "--tflops", "1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_given_images_per_s_scale_by_flops():
    from fedunet.model import ModelSpec

    plain = ModelSpec("vgg16", 3, 32, 10, width=0.25, unet_d=None)
    with_unet = ModelSpec("vgg16", 3, 32, 10, width=0.25, unet_d=128)
    prices = estimate.Prices(device="cuda", given={"vgg16": 1000.0})
    assert prices.train_time(plain, 1000) == pytest.approx(1.0)
    ratio = estimate.training_flops_per_sample(with_unet) / estimate.training_flops_per_sample(plain)
    assert prices.train_time(with_unet, 1000) == pytest.approx(ratio)
    with pytest.raises(estimate.EstimateError, match="--images-per-s resnet18"):
        prices.train_time(ModelSpec("resnet18", 3, 32, 10), 1)


def test_peak_memory_counts_models_data_and_activations():
    cfg = config.validate(tiny_raw())
    mem = estimate.peak_memory(estimate.run_work(cfg))
    assert mem["model_state_bytes"] == mem["parameters"] * 4 * 3  # param, grad, momentum
    assert mem["activation_bytes"] > 0 and mem["dataset_bytes"] > 0
    assert mem["device_bytes"] == mem["dataset_bytes"] + mem["model_state_bytes"] + mem["activation_bytes"]


def test_a_measuring_budget_prices_the_rest_at_the_measured_flop_rate():
    cfg = config.validate(tiny_raw())
    work = estimate.run_work(cfg)
    prices = estimate.measure_prices([work], "cpu", threads=1, steps=1, min_seconds=0.0, budget_s=0)
    assert len(prices.train_ips) == len(prices.eval_ips) == 1, "the budget stops once training and inference are measured"
    assert set(prices.fitted) == {"train", "eval"}
    assert estimate.price_run(work, prices)["wall_s"] > 0  # every model priced
