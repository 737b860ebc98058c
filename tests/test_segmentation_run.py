"""A segmentation run end to end (fedunet/segmentation/run.py through the engine): composites with
their partition, per-pixel training that learns, only the U-Net bottleneck on the wire, both
protocols every round, the validation-best round, resuming bit for bit, and the examples a figure
is drawn from."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DEBIAN_FMNIST_PRESENT, one_thread, seg_tiny_raw  # noqa: F401  (one_thread: autouse)

from fedunet import config, population, serialization
from fedunet.federated import Simulation, train
from fedunet.model import ClientModel, ModelSpec, select_state
from fedunet.partition import PartitionError
from fedunet.segmentation import run as segmentation
from fedunet.unet import BOTTLENECK_PREFIX

TIMING = ("time_train_s", "time_aggregate_s", "time_eval_s", "time_round_s", "elapsed_s")


def seg_cfg(**sections):
    return config.validate(seg_tiny_raw(**sections))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny FedUNet segmentation run (3 clients, 16 px canvases, 2 rounds), trained once."""
    out = tmp_path_factory.mktemp("seg")
    cfg = seg_cfg()
    sim = Simulation(cfg, out)
    summary = sim.run()
    return cfg, out, sim, summary


def background_share(masks: torch.Tensor) -> float:
    return float((masks == 0).double().mean())


def test_tiny_run_learns_above_the_majority_class_in_both_protocols(finished):
    _, out, sim, summary = finished
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["round"]) == [1, 2] and metrics["pers_miou"].notna().all()
    final = summary["final"]
    held_out = torch.cat([c.test_indices for c in sim.clients])
    # chance: predicting the majority class (background) everywhere scores its share of the pixels,
    # and that share over the classes present as mIoU (IoU 0 for every other class)
    pers_bg, global_bg = background_share(sim.data.train_masks[held_out]), background_share(sim.data.test_masks)
    assert final["pers_pixel_acc"] > pers_bg + 0.05 and final["global_pixel_acc"] > global_bg + 0.02
    assert final["pers_miou"] > pers_bg / 4 + 0.1 and final["global_miou"] > global_bg / 4 + 0.05
    # and better than in the first round
    assert final["pers_miou"] > metrics["pers_miou"].iloc[0] and metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    for col in ("pers_miou", "pers_pixel_acc", "global_miou", "global_pixel_acc", "val_miou", "pers_miou_unet_only"):
        assert 0 <= final[col] <= 1, col
    assert {"global_miou_encdec-tiny", "global_miou_fcn-cnn"} <= set(final)
    clients = pd.read_csv(out / "clients.csv")
    assert {"pers_miou", "pers_pixel_acc", "val_miou", "global_miou", "global_pixel_acc"} <= set(clients.columns)


def test_only_the_unet_bottleneck_crosses_the_wire_at_the_classification_size(finished):
    cfg, _, sim, summary = finished
    names = list(sim.method.upload_spec(sim.clients[0]).shapes)  # what the server accepts, by name
    assert names and all(n.startswith(BOTTLENECK_PREFIX) for n in names)
    assert set(names) == set(sim.method.upload(sim.clients[1], 2))
    # the same d beside a classification backbone: the same tensors, the same bytes
    d = cfg["model"]["unet"]["d"]
    classification = ClientModel(ModelSpec("cnn", 3, 32, 10, width=0.25, unet_d=d))
    payload = serialization.Encoder().encode(select_state(classification, BOTTLENECK_PREFIX))
    assert summary["communication"]["payload_bytes_up_per_client"] == len(payload)
    metrics = pd.read_csv(sim.out / "metrics.csv")
    assert (metrics["bytes_up"] == len(sim.clients) * len(payload)).all()


def test_the_best_round_is_the_validation_best_and_both_protocols_are_read_there(finished):
    _, out, _, summary = finished
    metrics = pd.read_csv(out / "metrics.csv")
    chosen = metrics.loc[metrics["val_miou"].idxmax()]
    best = summary["best"]
    assert best["selected_by"] == "val_miou" and best["round"] == chosen["round"]
    for col in ("pers_miou", "global_miou", "pers_pixel_acc", "global_pixel_acc"):
        assert best[col] == chosen[col], col
    assert summary["segmentation"]["classes"] == ["background", "class 0", "class 1", "class 2"]
    assert json.loads((out / "summary.json").read_text())["dataset"] == "synthetic-composite"


def test_examples_are_plain_arrays_of_the_global_test_canvases(finished):
    _, out, sim, summary = finished
    with np.load(out / summary["segmentation"]["examples"], allow_pickle=False) as npz:
        ex = {k: npz[k] for k in npz.files}
    n = segmentation.EXAMPLES
    assert np.array_equal(ex["images"], sim.data.test_images[:n].numpy())
    assert np.array_equal(ex["masks"], sim.data.test_masks[:n].numpy())
    assert ex["predictions"].shape == (3, n, 16, 16) and ex["predictions"].max() < sim.data.num_classes
    assert list(ex["architectures"]) == ["encdec-tiny", "fcn-cnn", "encdec-tiny"]
    # client 2's prediction is its model's argmax, recomputed
    c = sim.clients[2]
    c.model.eval()
    with torch.no_grad():
        again = c.logits(sim.normalizer(sim.data.test_images[:n])).argmax(1)
    assert np.array_equal(ex["predictions"][2], again.numpy())


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(finished, tmp_path):
    cfg, out, _, _ = finished
    assert train(cfg, tmp_path, stop_after=1) is None
    train(cfg, tmp_path, resume=True)
    for name in ("metrics.csv", "clients.csv"):
        ours, theirs = (pd.read_csv(d / name) for d in (tmp_path, out))
        drop = [c for c in TIMING if c in ours]
        pd.testing.assert_frame_equal(ours.drop(columns=drop), theirs.drop(columns=drop), check_exact=True)
    with np.load(tmp_path / "examples.npz") as a, np.load(out / "examples.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)


def test_a_partition_file_of_other_canvases_is_refused(tmp_path):
    cfg = seg_cfg()
    data = population.load_run_dataset(cfg)
    part = population.partition_for(cfg, data)
    assert part is data.partition and part.num_classes == 4
    counts = population.class_counts_of(cfg, data, part)
    assert counts.shape == (3, 4) and counts.sum() == 16 * 16 * sum(len(t) + len(v) for t, v in zip(part.train, part.test))
    other = seg_cfg(seed=1)
    population.partition_for(other, population.load_run_dataset(other)).save(tmp_path / "p.bin", data.train_labels, counts)
    cfg["partition"]["file"] = str(tmp_path / "p.bin")
    with pytest.raises(PartitionError, match="does not match the config"):
        population.partition_for(cfg, data)


@pytest.mark.skipif(not DEBIAN_FMNIST_PRESENT, reason="Fashion-MNIST is not installed")
def test_fmnist_composite_clients_see_their_label_skew():
    raw = seg_tiny_raw(
        dataset={
            "name": "fmnist-composite",
            "max_train": 2000,
            "composite": {"canvas_size": 32, "garments": [1, 2], "test_canvases": 20},
        },
        partition={"num_clients": 4, "alpha": 0.1, "min_samples": 20},
    )
    cfg = config.validate(raw)
    data = population.load_run_dataset(cfg)
    assert data.name == "fmnist-composite" and data.num_classes == 11 and data.input_size == 32
    counts = population.class_counts_of(cfg, data, population.partition_for(cfg, data))
    assert (counts[:, 1:] == 0).any()  # alpha 0.1: some garment class never shows on some client's canvases
    mean, std = population.normalization_stats(cfg, data, data.partition.train)
    # no published constants for canvases: the clients' training canvases' own (not Fashion-MNIST's 0.286)
    expected = data.channel_stats(torch.cat(data.partition.train))
    assert torch.equal(mean, expected[0]) and torch.equal(std, expected[1]) and abs(float(mean[0]) - 0.286) > 0.01


def test_diagnostics_follow_eval_diagnostics_every_like_classification(tmp_path):
    train(seg_cfg(eval={"diagnostics_every": 2}), tmp_path)  # 2 rounds: diagnostics in round 2 only
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["pers_miou"].notna().all()
    assert metrics["pers_miou_unet_only"].isna().tolist() == [True, False]
