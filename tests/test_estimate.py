"""``fedunet estimate`` (fedunet/estimate.py): its prices hold on this machine, peak memory per job,
and the totals of a study.  The work it counts: test_workload.py; images/s: test_throughput.py; the
command: test_cli_estimate.py."""

from __future__ import annotations

import pytest
from helpers import REPO, tiny_raw

from fedunet import config, estimate
from fedunet.federated import Simulation
from fedunet.throughput import Prices, measure_prices
from fedunet.workload import run_work, run_work_from_summary


def _estimate_against_two_real_runs(tmp_path) -> dict:
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
    finished = [(s, run_work_from_summary(s)) for s in runs]
    prices = measure_prices([w for _, w in finished], "cpu", threads=1, steps=5)
    return estimate.check_against(finished, prices)


def test_estimate_is_within_25_percent_of_real_runs_on_this_machine(tmp_path):
    """Within 25%, in one of two attempts. On a shared machine (CI beside a study in training: three
    busy processes on two cores) the throughput available moves between the runs and the pricing; once,
    the first run took 10.2 s against 6.5 s priced (ratio 0.73 over both). A second attempt tells such
    a moment from a wrong estimator, which misses both times."""
    checks = [_estimate_against_two_real_runs(tmp_path / "first")]
    if not 0.75 <= checks[0]["ratio"] <= 1.25:
        checks.append(_estimate_against_two_real_runs(tmp_path / "second"))
    assert 0.75 <= checks[-1]["ratio"] <= 1.25, checks


def test_peak_memory_counts_models_data_and_activations():
    cfg = config.validate(tiny_raw())
    mem = estimate.peak_memory(run_work(cfg))
    assert mem["model_state_bytes"] == mem["parameters"] * 4 * 3  # param, grad, momentum
    assert mem["activation_bytes"] > 0 and mem["dataset_bytes"] > 0
    assert mem["device_bytes"] == mem["dataset_bytes"] + mem["model_state_bytes"] + mem["activation_bytes"]


def test_totals_add_up_the_runs_and_keep_the_largest_job():
    cfg = estimate.load_study(REPO / "config" / "smoke.yaml")
    rows, experiments, total, _ = estimate.estimate_study(cfg, Prices(device="cpu", tflops=0.05))
    assert total["runs"] == len(rows) and total["job_s"] == pytest.approx(sum(r["job_s"] for r in rows.values()))
    assert total["longest_job_s"] == max(r["job_s"] for r in rows.values())
    assert total["peak_host_bytes"] == max(r["host_bytes"] for r in rows.values())
    for e in experiments.values():  # every experiment is a subset of the runs
        assert 1 <= e["runs"] <= total["runs"] and e["train_flops"] <= total["train_flops"] * (1 + 1e-12)
    assert sum(e["runs"] for e in experiments.values()) >= total["runs"]
