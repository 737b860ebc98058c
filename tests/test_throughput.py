"""Images/s measured here and the prices made from them (fedunet/throughput.py)."""

from __future__ import annotations

import pytest
from helpers import tiny_raw

from fedunet import config, throughput
from fedunet.costs import training_flops_per_sample
from fedunet.estimate import price_run
from fedunet.model import ModelSpec
from fedunet.throughput import EstimateError, Prices, measure_prices, measure_throughput
from fedunet.workload import run_work


def test_measured_throughput_is_images_trained_in_the_timed_window_over_its_duration(monkeypatch):
    """A clock that ticks once per training step: the rate is then exactly the batch size if the
    timed window holds the `steps` steps and nothing else (no warm-up step, no missing step)."""
    steps_done = []
    real_loss = throughput.F.cross_entropy
    monkeypatch.setattr(throughput.F, "cross_entropy", lambda *a, **k: steps_done.append(1) or real_loss(*a, **k))
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: float(len(steps_done)))
    rate = measure_throughput(ModelSpec("cnn", 1, 16, 10, width=0.25, unet_d=None), steps=3, warmup=2, batch_size=8)
    assert len(steps_done) == 2 + 3 and rate == 8.0


def test_given_images_per_s_scale_by_flops():
    plain = ModelSpec("vgg16", 3, 32, 10, width=0.25, unet_d=None)
    with_unet = ModelSpec("vgg16", 3, 32, 10, width=0.25, unet_d=128)
    prices = Prices(device="cuda", given={"vgg16": 1000.0})
    assert prices.train_time(plain, 1000) == pytest.approx(1.0)
    ratio = training_flops_per_sample(with_unet) / training_flops_per_sample(plain)
    assert prices.train_time(with_unet, 1000) == pytest.approx(ratio)
    with pytest.raises(EstimateError, match="--images-per-s resnet18"):
        prices.train_time(ModelSpec("resnet18", 3, 32, 10), 1)


def test_a_measuring_budget_prices_the_rest_at_the_measured_flop_rate():
    cfg = config.validate(tiny_raw())
    work = run_work(cfg)
    prices = measure_prices([work], "cpu", threads=1, steps=1, min_seconds=0.0, budget_s=0)
    assert len(prices.train_ips) == len(prices.eval_ips) == 1, "the budget stops once training and inference are measured"
    assert set(prices.fitted) == {"train", "eval"}
    assert price_run(work, prices)["wall_s"] > 0  # every model priced
