import csv
import json
import math

import pytest
import torch

from fedunet import serialization
from fedunet import summary as run_summary
from fedunet.federated import Simulation, train
from fedunet.metrics import TIMING_COLUMNS


def read_metrics(path):
    with open(path / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_run_writes_metrics_summary_and_learns(tiny_cfg, tmp_path):
    summary = train(tiny_cfg(federated={"rounds": 4}), tmp_path)
    rows = read_metrics(tmp_path)
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["final"]["pers_acc"] > 1 / 3  # above chance on 3 classes
    for key in ("commit", "dirty"):
        assert key in summary["provenance"]["git"]
    assert summary["provenance"]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert summary["provenance"]["device"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert summary["config"]["seed"] == 0 and summary["seed"] == 0
    assert set(summary["best"]) == {"selected_by", "round", "val_acc", "pers_acc", "global_acc"}
    assert {"global_acc_vgg11", "global_acc_cnn"} <= set(rows[0])
    clients = list(csv.DictReader(open(tmp_path / "clients.csv")))
    assert len(clients) == 4 * 4 and {c["architecture"] for c in clients} == {"vgg11", "cnn"}


def test_bytes_are_the_lengths_of_the_real_payloads(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    sim = Simulation(cfg, tmp_path)
    sim.build()
    expected = len(serialization.encode(sim.method.upload(sim.clients[0], 1)))
    row = sim.run_round(1)
    assert row["bytes_up"] == 4 * expected and row["bytes_down"] == 4 * expected
    assert row["mb_up_per_client"] == expected / 1e6
    # the summary's payload size is the one recorded when the uploads were encoded
    shared = sim.method.upload(sim.clients[3], 1)
    assert sim.last_upload == {
        "bytes": expected,
        "tensor_bytes": sum(t.numel() * t.element_size() for t in shared.values()),
        "tensors": len(shared),
    }


def test_half_precision_payloads_halve_the_traffic(tiny_cfg, tmp_path):
    full = train(tiny_cfg(), tmp_path / "a")["communication"]["payload_bytes_up_per_client"]
    half = train(tiny_cfg(federated={"rounds": 2, "payload_dtype": "bfloat16"}), tmp_path / "b")
    assert half["communication"]["payload_bytes_up_per_client"] < 0.6 * full
    assert half["final"]["pers_acc"] > 0


def test_server_numbers_are_written_to_metrics_csv_with_their_prefix(tiny_cfg, tmp_path):
    summary = train(tiny_cfg(method="fedtgp", federated={"rounds": 2}), tmp_path)
    rows = read_metrics(tmp_path)
    assert all(float(r["server_margin"]) >= 0 and int(r["server_prototypes"]) > 0 for r in rows)
    assert not any(k.startswith("server_") for k in summary["final"])  # metrics.csv only


def test_local_method_sends_no_bytes(tiny_cfg, tmp_path):
    s = train(tiny_cfg(method="local"), tmp_path)
    assert s["communication"]["total_bytes_up"] == 0 and s["communication"]["total_bytes_down"] == 0
    assert s["communication"]["payload_bytes_up_per_client"] == 0 and s["communication"]["shared_tensors"] == 0


def test_same_config_and_seed_give_identical_metrics(tiny_cfg, tmp_path):
    train(tiny_cfg(), tmp_path / "a")
    train(tiny_cfg(), tmp_path / "b")
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    train(tiny_cfg(seed=1), tmp_path / "c")
    assert read_metrics(tmp_path / "a") != read_metrics(tmp_path / "c")


def test_bad_payload_is_rejected_and_round_goes_on_without_it(tiny_cfg, tmp_path):
    """The aggregate with a corrupted client equals the aggregate computed without that client."""
    cfg = tiny_cfg(federated={"rounds": 1})

    def nan_from_client_1(r, client, blob):
        if client.index != 1:
            return blob
        tensors, _ = serialization.decode(blob)
        bad = {n: t.clone() for n, t in tensors.items()}
        bad["unet.bottleneck.conv.0.weight"][0] = float("nan")
        return serialization.encode(bad)

    attacked = Simulation(cfg, tmp_path / "a", tamper=nan_from_client_1)
    attacked.run()
    events = [json.loads(line) for line in open(tmp_path / "a" / "events.jsonl")]
    assert events[0]["client"] == 1 and events[0]["event"] == "payload_rejected" and "NaN" in events[0]["detail"]
    assert read_metrics(tmp_path / "a")[0]["rejected"] == "1"

    # Reference: same clients, same training; aggregate by hand without client 1.
    ref = Simulation(cfg, tmp_path / "b")
    ref.build()
    from fedunet.methods.aggregate import weighted_mean
    from fedunet.methods.base import Upload

    uploads = []
    for c in ref.clients:
        c.train(1, ref.method.loss)
        if c.index != 1:
            sent = ref.method.upload(c, 1)
            uploads.append(Upload(c, {n: t.detach().cpu().clone() for n, t in sent.items()}, float(c.num_train)))
    expected = weighted_mean(uploads)
    got = attacked.method.global_state
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_diverging_client_is_reported_and_excluded(tiny_cfg, tmp_path):
    sim = Simulation(tiny_cfg(federated={"rounds": 2}), tmp_path)
    sim.build()
    base_loss = sim.method.loss

    def exploding(client, x, y):
        loss = base_loss(client, x, y)
        return loss * float("inf") if client.index == 2 else loss

    sim.method.loss = exploding
    row = sim.run_round(1)
    kinds = {(e["client"], e["event"]) for e in sim.events}
    assert (2, "diverged") in kinds and (2, "payload_rejected") in kinds
    assert row["rejected"] == 1 and math.isfinite(row["train_loss"])
    assert all(torch.isfinite(t).all() for t in sim.method.global_state.values() if t.is_floating_point())


def test_eval_every_skips_rounds_but_always_evaluates_the_last(tiny_cfg, tmp_path):
    train(tiny_cfg(federated={"rounds": 3}, eval={"every": 2, "batch_size": 64}), tmp_path)
    rows = read_metrics(tmp_path)
    assert [bool(r["pers_acc"]) for r in rows] == [False, True, True]


# ------------------------------------------------------------------ fair statistics


def test_best_round_is_chosen_on_validation_never_on_a_test_split():
    from fedunet.metrics import best_round

    rows = [
        {"round": 1, "val_acc": 0.50, "pers_acc": 0.90, "global_acc": 0.90},
        {"round": 2, "val_acc": 0.70, "pers_acc": 0.60, "global_acc": 0.55},
        {"round": 3, "val_acc": 0.70, "pers_acc": 0.95, "global_acc": 0.95},
    ]
    assert best_round(rows)["round"] == 2  # the highest validation accuracy, earliest on ties


def test_normalization_never_sees_held_out_or_test_images(tiny_cfg, tmp_path):
    from fedunet.population import normalization_stats, validation_split

    sim = Simulation(tiny_cfg(), tmp_path)
    sim.build()
    data = sim.data.to("cpu")
    kept, _ = validation_split(sim.partition.train, 0.1, 0)
    mean, std = normalization_stats(sim.cfg, data, kept)
    train_only = data.train_images[torch.cat(kept)].double() / 255
    torch.testing.assert_close(mean.double(), train_only.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    everything = data.train_images.double() / 255
    assert not torch.allclose(mean.double(), everything.mean(dim=(0, 2, 3)), rtol=0, atol=1e-7)
    fmnist = {"dataset": {"name": "fashion-mnist", "normalization": "dataset"}}
    m, s = normalization_stats(fmnist, data, kept)
    assert m.tolist() == pytest.approx([0.2860]) and s.tolist() == pytest.approx([0.3530])


# ------------------------------------------------------------------ divergence and diagnostics


def test_finite_loss_explosion_is_flagged_in_events_rows_and_summary(tiny_cfg, tmp_path):
    from fedunet.client import TrainStats

    sim = Simulation(tiny_cfg(federated={"rounds": 3}), tmp_path)
    sim.build()
    victim = sim.clients[2]
    original = victim.train

    def exploding(epochs, loss_fn):
        stats = original(epochs, loss_fn)
        return TrainStats(loss=6e17, samples=stats.samples, steps=stats.steps, finite=True) if sim_round[0] == 2 else stats

    sim_round = [0]
    victim.train = exploding
    rows = []
    for r in (1, 2, 3):
        sim_round[0] = r
        rows.append(sim.run_round(r))
        sim.rows.append(rows[-1])
    assert [r["diverged"] for r in rows] == [0, 1, 0]
    events = [e for e in sim.events if e["event"] == "diverged"]
    assert len(events) == 1 and events[0]["client"] == 2 and events[0]["round"] == 2
    summary = run_summary.build(sim, "now")
    assert summary["diverged"] == {"any": True, "client_rounds": 1, "first_round": 2}
    assert run_summary.diverged(summary)


def test_diagnostics_evaluate_each_path_alone_for_unet_models_only(tiny_cfg, tmp_path):
    summary = train(tiny_cfg(), tmp_path / "unet")
    final = summary["final"]
    for key in ("pers_acc_backbone_only", "pers_acc_unet_only", "norm_backbone", "norm_unet", "pers_acc_no_bottleneck"):
        assert key in final
    assert final["norm_unet"] > 0 and final["norm_backbone"] > 0
    assert 0 <= final["pers_acc_unet_only"] <= 1 and 0 <= final["pers_acc_no_bottleneck"] <= 1
    plain = train(tiny_cfg(method="fedavg", model={"architectures": ["cnn"]}), tmp_path / "plain")["final"]
    assert "pers_acc_unet_only" not in plain and "norm_unet" not in plain and "pers_acc_no_bottleneck" not in plain


def test_diagnostics_run_every_nth_evaluated_round_and_in_the_last(tiny_cfg, tmp_path):
    train(tiny_cfg(federated={"rounds": 5}, eval={"diagnostics_every": 2}), tmp_path)
    rows = read_metrics(tmp_path)
    diagnosed = [int(r["round"]) for r in rows if r["pers_acc_no_bottleneck"] != ""]
    assert diagnosed == [2, 4, 5] and all(r["pers_acc_unet_only"] == "" for r in rows if int(r["round"]) in (1, 3))
    assert all(r["pers_acc"] != "" and r["global_acc"] != "" for r in rows)  # the protocols every round


def test_diagnostic_ablation_changes_predictions_and_is_undone(tiny_cfg, tmp_path):

    sim = Simulation(tiny_cfg(), tmp_path)
    sim.build()
    sim.run_round(1)
    c = sim.clients[0]
    x = next(iter(c.loader))[0]
    c.model.eval()
    with torch.no_grad():
        full = c.model(x)
        c.model.fusion.ablate = "backbone"
        unet_only = c.model(x)
        c.model.fusion.ablate = None
    assert not torch.allclose(full, unet_only)
    with torch.no_grad():
        c.model.unet.ablate_bottleneck = True
        no_bottleneck = c.model(x)
        c.model.unet.ablate_bottleneck = False
    assert not torch.equal(full, no_bottleneck)  # (after one tiny round the logits barely depend on the image)
    per_client = {}
    sim._evaluate(c, per_client)
    assert c.model.fusion.ablate is None and c.model.fusion.norms is None and not c.model.unet.ablate_bottleneck
    with torch.no_grad():
        torch.testing.assert_close(c.model(x), full)


def test_a_regularizer_that_starts_in_round_two_is_not_divergence(tiny_cfg, tmp_path):
    """FedProto-like losses jump once global state exists: the reference follows round 2 unless
    round 2 itself exploded (then round 1 stays the reference and round 2 is flagged)."""
    from fedunet.client import TrainStats

    def run(losses):
        sim = Simulation(tiny_cfg(federated={"rounds": len(losses)}), tmp_path / str(len(list(tmp_path.iterdir()))))
        sim.build()
        victim = sim.clients[1]
        original = victim.train
        current = [0]

        def scripted(epochs, loss_fn):
            stats = original(epochs, loss_fn)
            return TrainStats(loss=losses[current[0] - 1], samples=stats.samples, steps=stats.steps, finite=True)

        victim.train = scripted
        flagged = []
        for r in range(1, len(losses) + 1):
            current[0] = r
            sim.run_round(r)
            flagged.append(any(e["round"] == r and e["client"] == 1 for e in sim.events if e["event"] == "diverged"))
        return flagged

    assert run([2.0, 8.0, 60.0]) == [False, False, False]  # 60 < 10 x 8
    assert run([2.0, 8.0, 90.0]) == [False, False, True]
    assert run([2.0, 6e17, 2.0]) == [False, True, False]  # an exploding round 2 never becomes the reference
    # 3 classes: the reference is never below ln 3 = 1.10 (a client that fits its data to 0.08 has
    # not exploded at 1.5)
    assert run([0.08, 1.5, 10.9]) == [False, False, False]
    assert run([0.08, 11.1]) == [False, True]
