"""summary.json: what a run's summary holds, and the readers the study tables use."""

import copy
import math

import pytest
from helpers import seg_tiny_raw
from test_federated import read_metrics

from fedunet import config
from fedunet import summary as run_summary
from fedunet.federated import Simulation, train


def test_summary_reads_both_test_protocols_at_the_validation_best_round(tiny_cfg, tmp_path):
    summary = train(tiny_cfg(federated={"rounds": 4}), tmp_path)
    rows = read_metrics(tmp_path)
    vals = [float(r["val_acc"]) for r in rows]
    chosen = rows[vals.index(max(vals))]
    assert summary["best"]["round"] == int(chosen["round"]) and summary["best"]["selected_by"] == "val_acc"
    assert summary["best"]["pers_acc"] == float(chosen["pers_acc"])
    assert summary["best"]["global_acc"] == float(chosen["global_acc"])
    best = run_summary.best(summary)
    assert best == {k: summary["best"][k] for k in ("round", "val_acc", "pers_acc", "global_acc")}


def test_without_validation_split_there_is_no_best_round(tiny_cfg, tmp_path):
    summary = train(tiny_cfg(eval={"validation_fraction": 0.0}), tmp_path)
    assert summary["best"] == {} and "val_acc" not in summary["final"]
    assert run_summary.best(summary) == {"round": None, "val_acc": None, "pers_acc": None, "global_acc": None}


def test_communication_is_what_the_last_upload_encoded(tiny_cfg, tmp_path):
    sim = Simulation(tiny_cfg(method="fedkd", federated={"rounds": 2}), tmp_path)
    summary = sim.run()
    comm = summary["communication"]
    last = sim.rows[-1]
    assert comm["payload_bytes_up_per_client"] == sim.last_upload["bytes"] > 0
    assert comm["shared_tensor_bytes"] == sim.last_upload["tensor_bytes"] and comm["shared_tensors"] == sim.last_upload["tensors"]
    # FedKD's payload changes every round: it is one of the last round's real uploads
    sizes = [int(c["bytes_up"]) for c in sim.client_rows if c["round"] == last["round"] and c["participated"]]
    assert comm["payload_bytes_up_per_client"] == sizes[-1] and sum(sizes) == last["bytes_up"]
    assert run_summary.communication(summary) == {
        "payload_bytes": comm["payload_bytes_up_per_client"],
        "shared_tensor_bytes": comm["shared_tensor_bytes"],
        "initial_sync_bytes": comm["initial_sync_bytes"],
    }


SUMMARY = {
    "rounds": 3,
    "dataset": "synthetic",
    "model": {"unet": True, "aux_models": []},
    "final": {"pers_acc": 0.8, "pers_acc_std": 0.1, "global_acc": 0.5, "global_acc_std": 0.02, "global_acc_cnn": 0.4},
    "best": {"selected_by": "val_acc", "round": 2, "val_acc": 0.7, "pers_acc": 0.75, "global_acc": 0.45},
    "diverged": {"any": False, "client_rounds": 0, "first_round": None},
    "communication": {"payload_bytes_up_per_client": 100, "shared_tensor_bytes": 64, "initial_sync_bytes": 400},
    "events": [{"event": "payload_rejected"}, {"event": "payload_rejected"}, {"event": "compile_fallback"}],
    "timing": {"wall_s": 9.0, "mean_round_s": 3.0, "train_samples_per_s": 120.0},
    "config": {"federated": {"divergence_factor": 5}},
    "provenance": {
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "device": {"name": "cpu", "cpu_capability": "AVX2"},
        "packages": {"torch": "2.14.1"},
        "finished": "2025-01-01T00:00:00+00:00",
    },
}


def test_readers():
    s = SUMMARY
    assert run_summary.final(s) is s["final"]
    assert run_summary.final_accuracy(s) == {"pers_acc": 0.8, "pers_acc_client_std": 0.1, "global_acc": 0.5}
    assert run_summary.best(s) == {"round": 2, "val_acc": 0.7, "pers_acc": 0.75, "global_acc": 0.45}
    assert run_summary.architecture_accuracies(s) == {"cnn": 0.4}
    assert run_summary.communication(s) == {"payload_bytes": 100, "shared_tensor_bytes": 64, "initial_sync_bytes": 400}
    assert run_summary.diverged(s) is False and run_summary.divergence_factor(s) == 5
    assert run_summary.rejected_payloads(s) == 2
    assert run_summary.timing(s) == {"wall_s": 9.0, "mean_round_s": 3.0, "train_samples_per_s": 120.0}
    assert run_summary.provenance(s) == {
        "commit": "0123456789ab",
        "dirty": False,
        "device": "cpu",
        "cpu_capability": "AVX2",
        "torch": "2.14.1",
        "finished": "2025-01-01T00:00:00+00:00",
    }
    assert run_summary.trained_models(s) == {"unet": True, "aux_models": []}


def test_readers_accept_summaries_of_earlier_versions():
    old = copy.deepcopy(SUMMARY)
    old["best"] = {"round": 3, "pers_acc": 0.9}  # chosen on a test split, before validation splits
    del old["diverged"]  # only events then
    old["events"].append({"event": "diverged"})
    del old["communication"]["initial_sync_bytes"]
    del old["timing"]["train_samples_per_s"]
    del old["config"]["federated"]["divergence_factor"]
    del old["provenance"]["device"]["cpu_capability"]
    old["provenance"]["git"]["commit"] = None
    assert run_summary.best(old) == {"round": None, "val_acc": None, "pers_acc": None, "global_acc": None}
    assert run_summary.diverged(old) is True and run_summary.divergence_factor(old) == 10
    assert run_summary.communication(old)["initial_sync_bytes"] == 0
    assert run_summary.timing(old)["train_samples_per_s"] is None
    prov = run_summary.provenance(old)
    assert prov["cpu_capability"] == "" and prov["commit"] == ""


@pytest.mark.parametrize("method", ["fedunet", "fd"])
def test_summary_sizes_equal_a_fresh_encoding_for_fixed_size_payloads(tiny_cfg, tmp_path, method):
    """Methods whose payload has the same shapes every round report the same size as encoding a
    client's upload again at the end (what the summary did before sizes were recorded)."""
    from fedunet import serialization

    sim = Simulation(tiny_cfg(method=method), tmp_path)
    summary = sim.run()
    again = sim.method.upload(sim.clients[0], sim.round)
    assert summary["communication"]["payload_bytes_up_per_client"] == len(serialization.encode(again))
    assert summary["communication"]["shared_tensor_bytes"] == sum(t.numel() * t.element_size() for t in again.values())
    assert summary["communication"]["shared_tensors"] == len(again)


def test_segmentation_best_round_is_chosen_on_validation_miou_never_on_a_test_set():
    # each score peaks in another round: only val_miou may choose
    rows = [
        {"round": 1, "val_miou": 0.30, "pers_miou": 0.9, "global_miou": 0.1, "pers_pixel_acc": 0.5, "val_acc": 0.99},
        {"round": 2, "val_miou": 0.40, "pers_miou": 0.2, "global_miou": 0.2, "pers_pixel_acc": 0.6, "val_acc": 0.10},
        {"round": 3, "val_miou": 0.40, "pers_miou": 0.3, "global_miou": 0.9, "pers_pixel_acc": 0.7, "val_acc": 0.10},
        {"round": 4, "val_miou": float("nan"), "pers_miou": 1.0, "global_miou": 1.0, "pers_pixel_acc": 1.0},
    ]
    best = run_summary.best_of(rows, "segmentation")
    read = {"val_miou": 0.40, "pers_miou": 0.2, "global_miou": 0.2, "pers_pixel_acc": 0.6}
    assert best == {"selected_by": "val_miou", "round": 2, **read}
    assert run_summary.best_of(rows)["round"] == 1  # classification chooses on val_acc
    s = {**copy.deepcopy(SUMMARY), "dataset": "fmnist-composite", "best": best}
    assert run_summary.task(s) == "segmentation" and run_summary.best(s)["pers_miou"] == 0.2
    s["best"] = {**best, "selected_by": "pers_miou"}  # chosen on a test set: not reported as a best round
    assert set(run_summary.best(s).values()) == {None}


def test_chance_loss_is_ln_of_the_recorded_class_count_else_of_the_configs_dataset(tiny_cfg):
    """Summaries written before ``num_classes`` was recorded take the class count from their
    config (costs.geometry, no data loaded), so their divergence is judged by today's rule."""
    synthetic = tiny_cfg()
    classes = synthetic["dataset"]["synthetic"]["num_classes"]
    fmnist = tiny_cfg(dataset={"name": "fashion-mnist"})
    assert run_summary.chance_loss({"num_classes": 7, "config": synthetic}) == pytest.approx(math.log(7))
    assert run_summary.chance_loss({"config": synthetic}) == pytest.approx(math.log(classes))
    assert run_summary.chance_loss({"config": fmnist}) == pytest.approx(math.log(10))
    composite = config.validate(seg_tiny_raw())  # segmentation: the background is a class
    seg_classes = composite["dataset"]["synthetic"]["num_classes"] + 1
    assert run_summary.chance_loss({"config": composite}) == pytest.approx(math.log(seg_classes))
