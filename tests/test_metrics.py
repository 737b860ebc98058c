import csv
import io
import math

import pytest

from fedunet.metrics import LossReference, Progress, best_round, divergence, summarize_round, write_csv


def test_personalized_is_sample_weighted_and_global_is_a_client_mean():
    per_client = [
        {
            "architecture": "vgg11",
            "n_test": 10,
            "pers_correct": 9,
            "pers_acc": 0.9,
            "pers_loss_sum": 1.0,
            "global_acc": 0.5,
            "global_loss": 2.0,
        },
        {
            "architecture": "cnn",
            "n_test": 30,
            "pers_correct": 15,
            "pers_acc": 0.5,
            "pers_loss_sum": 3.0,
            "global_acc": 0.7,
            "global_loss": 1.0,
        },
    ]
    row = summarize_round(per_client)
    assert row["pers_acc"] == pytest.approx(24 / 40)
    assert row["pers_acc_std"] == pytest.approx(0.2)
    assert row["global_acc"] == pytest.approx(0.6)
    assert row["global_acc_vgg11"] == 0.5 and row["global_acc_cnn"] == 0.7
    assert row["pers_loss"] == pytest.approx(4 / 40)


def test_csv_floats_round_trip_exactly(tmp_path):
    value = 0.1 + 0.2
    write_csv(tmp_path / "m.csv", [{"round": 1, "acc": value}, {"round": 2, "acc": 1 / 3, "extra": 5}])
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert float(rows[0]["acc"]) == value and rows[1]["extra"] == "5" and rows[0]["extra"] == ""


def test_best_round_ignores_unevaluated_rounds():
    rows = [{"round": 1}, {"round": 2, "acc": 0.4}, {"round": 3, "acc": float("nan")}, {"round": 4, "acc": 0.3}]
    assert best_round(rows, "acc")["round"] == 2
    assert best_round([{"round": 1}], "acc") is None


def test_progress_prints_one_line_per_round_in_logs():
    stream = io.StringIO()
    p = Progress(10, stream=stream)
    p.update({"round": 1, "pers_acc": 0.5, "global_acc": 0.25, "train_loss": 1.0, "mb_up_per_client": 0.89})
    p.update({"round": 2, "train_loss": math.nan, "mb_up_per_client": 0.89})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "round 1/10" in lines[0] and "pers 50.00%" in lines[0] and "ETA" in lines[0]
    assert "global" not in lines[1]


# ------------------------------------------------------------------ divergence


def test_divergence_rule():
    assert divergence(2.0, 2.3, 10) == ""
    assert "exceeds 10x" in divergence(6e17, 2.3, 10)
    assert divergence(24.0, 2.3, 10) and not divergence(22.9, 2.3, 10)
    assert "nan" in divergence(float("nan"), None, 10)
    assert divergence(5.0, None, 10) == ""


@pytest.mark.parametrize(
    "losses, reference",
    [
        ([2.0, 8.0, 60.0], 8.0),  # a regularizer that starts in round 2 raises the reference
        ([2.0, 1.0, 60.0], 2.0),  # never lowers it
        ([2.0, 6e17, 2.0], 2.0),  # an exploding round 2 never becomes the reference
        ([float("nan"), 3.0, 5.0, 90.0], 5.0),  # the first two *finite* losses
        ([float("nan")], None),
    ],
)
def test_loss_reference_is_the_first_finite_loss_raised_to_the_second_unless_it_diverged(losses, reference):
    assert LossReference.of(losses, 10).value == reference
    ref = LossReference(10)  # the engine's way: one loss at a time
    for loss in losses:
        ref.observe(loss)
    assert ref.value == reference and ref.seen == min(sum(map(math.isfinite, losses)), 2)


def test_observe_adds_a_finite_loss_before_checking_and_only_checks_the_others():
    """The engine's order, in one place: round 1 sets the reference (so is never flagged), an
    exploding round 2 is flagged and does not become the reference, a NaN is flagged and never
    becomes nor moves it."""
    ref = LossReference(10)
    losses = [float("nan"), 2.0, 6e17, float("nan"), 19.0, 21.0]
    assert [ref.observe(loss) != "" for loss in losses] == [True, False, True, True, False, True]
    assert ref.value == 2.0 and ref.seen == 2


def test_divergence_is_never_judged_against_less_than_the_chance_level_loss():
    """FedTGP with lambda 10 was flagged wrongly: a client fit its two classes to 0.08 in round 1,
    and the prototype term of round 2 took it to 1.5 while its accuracy rose. Ten times chance
    (ln 10 = 2.30) is still an explosion: FedProto's 1.5 -> 27 under momentum stays flagged."""
    chance = math.log(10)
    assert divergence(1.5, 0.08, 10) and divergence(1.5, 0.08, 10, floor=chance) == ""
    assert "chance-level loss 2.303" in divergence(24.0, 0.08, 10, floor=chance)
    assert "first rounds' value 3" in divergence(31.0, 3.0, 10, floor=chance)  # above the floor: as before
    assert LossReference.first_divergence([0.08, 1.5, 1.07, 0.9], 10) == (1, divergence(1.5, 0.08, 10))
    assert LossReference.first_divergence([0.08, 1.5, 1.07, 0.9], 10, chance) is None
    assert LossReference.first_divergence([1.5, 27.0, 64.0, 14036.0], 10, chance)[0] == 1
    assert LossReference.first_divergence([2.0, 1.0, float("nan")], 10, chance)[0] == 2
    ref = LossReference(10, floor=chance)  # a round 2 within the floor's reach raises the reference
    ref.add(0.08), ref.add(1.5)
    assert ref.value == 1.5 and ref.check(23.0) == "" and ref.check(23.1)


def test_loss_reference_checks_against_its_value():
    ref = LossReference.of([2.0, 8.0], 10)
    assert ref.check(60.0) == "" and "exceeds 10x" in ref.check(90.0)
    assert "nan" in LossReference(10).check(float("nan")) and LossReference(10).check(1e30) == ""
