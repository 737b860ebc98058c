"""The Snakemake workflow end to end: config validation, the smoke study, reruns, fresh clones.

Each test runs snakemake in its own working directory (``--directory``), so nothing is
written into the repository.
"""

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, SMOKE_TABLES, snakemake_command, write_study
from snakemake.utils import validate

from fedunet.study import Study

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout, cwd=workdir)


def job_counts(output: str) -> dict[str, int]:
    counts, table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif not line.startswith("---"):
                table = False if counts else table
    return counts


SCRIPTS = REPO / "workflow" / "scripts"
# the provenance a table's footer reads (study_markdown._footer), for tests that render a table
PROV = {"generated": "now", "study": "s", "config_files": ["c.yaml"], "datasets": ["d"], "seeds": [0],
        "commits": ["abc"], "dirty_runs": 0, "devices": ["cpu"], "torch": ["2"]}  # fmt: skip


def test_footer_says_when_a_table_holds_only_the_runs_finished_so_far(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_markdown import _footer

    prov = {**PROV, "runs": 30}
    assert "so far" not in _footer(prov) and "so far" not in _footer({**prov, "planned_runs": 30})
    assert "from 30 runs (the runs finished so far, of 165 planned)" in _footer({**prov, "planned_runs": 165})


def test_intervals_are_shown_with_their_mark_and_a_single_seed_gets_none(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_markdown import interval_text

    assert interval_text(-0.68, -1.05, -0.31, True) == "-0.68 [-1.05, -0.31] *"
    assert interval_text(0.2, -0.4, 0.84, False) == "+0.20 [-0.40, +0.84]"
    assert interval_text(-0.68, -1.05, -0.31, True, True) == "-0.68 [-1.05, -0.31] **"  # after Holm's correction
    assert interval_text(0.47, -math.inf, math.inf, False) == "+0.47 (one seed: no interval)"
    assert interval_text(math.nan, math.nan, math.nan, False) == "-"


def test_paper_vs_ours_puts_our_value_beside_each_claim(monkeypatch):
    """Accuracy claims read only FedUNet on VGG11/13/16/19 at the default fusion and alpha, each run
    once; byte claims and the saving come from the costs of the U-Net we build."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import PAPER_CLAIMS, paper_vs_ours

    def run(seed, acc, method="fedunet", archs="vgg11 vgg13 vgg16 vgg19", fusion="add", alpha="a0.5", d=128):
        return {
            "run": f"{archs}/{method}/d{d}-{fusion}-{alpha}/seed{seed}",
            "archset": "hetero-vgg",
            "method": method,
            "architectures": archs,
            "fusion": fusion,
            "alpha": alpha,
            "d": d,
            "dataset": "cifar10",
            "final_global_acc": acc,
            "final_pers_acc": acc / 2,
            "best_global_acc": acc / 4,
        }

    runs = pd.DataFrame(
        [run(0, 0.80), run(1, 0.90), run(1, 0.90)]  # seed 1 in two experiments: one run, counted once
        + [run(2, 0.1, fusion="concat"), run(2, 0.1, alpha="a0.1"), run(2, 0.1, archs="vgg16 vgg16 vgg16 vgg16")]
        + [run(2, 0.1, method="local"), run(2, 0.1, d=64)]  # none of these is the paper's setting
    )
    costs = {
        "unets": [
            {"d": 128, "bottleneck_state_bytes": 889_872, "payload_bytes_fp32": 890_500},
            {"d": 1024, "bottleneck_state_bytes": 56_664_080, "payload_bytes_fp32": 60_000_000},  # apart, to tell them apart
        ],
        "backbones": [{"architecture": "vgg16", "fedavg_payload_bytes_fp32": 58_900_000}],
        "width": 1.0,
        "geometry": [3, 32, 32],
    }
    t = paper_vs_ours(runs, costs, "cmd", {"fusion": ["add"], "alpha": [0.5]})
    assert list(t.columns) == ["claim", "paper", "ours", "ours_std", "unit", "protocol", "dataset", "source", "command"]
    assert list(dict.fromkeys(t["claim"])) == [c["claim"] for c in PAPER_CLAIMS]
    assert dict(zip(t["claim"], t["paper"])) == {c["claim"]: c["paper"] for c in PAPER_CLAIMS}

    compact = t[t["claim"] == "accuracy, heterogeneous VGGs, compact module"].reset_index(drop=True)
    assert list(compact["ours"]) == pytest.approx([85.0, 42.5, 21.25])  # global, personalized, best global
    std = pd.Series([0.8, 0.9]).std()  # sample std over the two seeds
    assert list(compact["ours_std"]) == pytest.approx([100 * std, 50 * std, 25 * std])
    assert compact["protocol"].str.contains("over 2 seeds, add fusion, a0.5").all()
    standard = t[t["claim"] == "accuracy, heterogeneous VGGs, standard module"]
    assert len(standard) == 1 and math.isnan(standard["ours"].item()) and "not run" in standard["protocol"].item()

    full = t[t["claim"] == "communication per round, full synchronization"]
    assert list(full["ours"]) == [56.66408, 60.0]  # bottleneck state_dict, serialized payload (MB)
    saving = t[t["claim"] == "communication saved by the compact module"]
    assert list(saving["ours"]) == pytest.approx([100 * (1 - 890_500 / 60_000_000), 100 * (1 - 890_500 / 58_900_000)])
    costs["width"] = 0.125  # not the paper's VGG16: no saving against it
    narrow = paper_vs_ours(runs, costs, "cmd", {"fusion": ["add"], "alpha": [0.5]})
    assert (narrow["claim"] == "communication saved by the compact module").sum() == 1


def test_rounds_table_shows_each_rounds_mean_the_maximum_and_the_pace(monkeypatch):
    """Hand-computed: two seeds of one cell, three rounds; the maximum is taken per run, then averaged."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import round_columns, rounds_table

    cell = {"experiment": "htfl", "archset": "a", "method": "fd", "d": 64, "fusion": "add", "alpha": "a0.1"}
    runs = pd.DataFrame(
        [
            {**cell, "run": "s0", "seed": 0, "mean_round_s": 10.0, "train_samples_per_s": 100.0},
            {**cell, "run": "s1", "seed": 1, "mean_round_s": 30.0, "train_samples_per_s": 300.0},
        ]
    )
    curves = pd.DataFrame({"run": ["s0"] * 3 + ["s1"] * 3, "round": [1, 2, 3] * 2, "pers_acc": [0.5, 0.9, 0.7, 0.3, 0.4, 0.8]})
    t = rounds_table(runs, curves).iloc[0]
    assert [t["pers_acc_r1"], t["pers_acc_r2"], t["pers_acc_r3"]] == pytest.approx([0.4, 0.65, 0.75])
    assert t["pers_acc_max_over_rounds"] == pytest.approx((0.9 + 0.8) / 2)  # not max of the means (0.75)
    assert (t["seeds"], t["seconds_per_round"], t["train_samples_per_s"]) == (2, 20.0, 200.0)
    assert round_columns(list(range(1, 7))) == [1, 2, 3, 4, 5, 6]
    assert round_columns(list(range(1, 21))) == [1, 2, 3, 4, 8, 12, 16, 20]
    assert round_columns(list(range(1, 101)), most=6) == [1, 2, 3, 4, 52, 100]


def test_variants_table_pairs_each_setting_with_the_default_of_its_option(monkeypatch):
    """Hand-computed: FedUNet at d=16 and d=64 (add) and at concat (d=64), two seeds; each setting minus
    the default (d=64, add) over the seeds both ran, the other option held; a method with one setting
    (local) and alpha (a different partition) are never paired."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import variants_table

    def run(method, d, fusion, seed, pers, glob, alpha="a0.5", mb=1.0):
        return {"experiment": "e", "archset": "a", "method": method, "d": d, "fusion": fusion, "alpha": alpha,
                "seed": seed, "final_pers_acc": pers, "final_global_acc": glob, "diverged": False,
                "mb_up_per_client": mb}  # fmt: skip

    runs = pd.DataFrame(
        [
            run("fedunet", 64, "add", 0, 0.80, 0.50, mb=4.0),
            run("fedunet", 64, "add", 1, 0.82, 0.54, mb=4.0),
            run("fedunet", 16, "add", 0, 0.77, 0.49, mb=1.0),
            run("fedunet", 16, "add", 1, 0.78, 0.52, mb=1.0),
            run("fedunet", 16, "add", 2, 0.10, 0.10, mb=1.0),  # no partner at d=64: not paired
            run("fedunet", 64, "concat", 0, 0.81, 0.50, mb=4.0),
            run("fedunet", 64, "concat", 1, 0.84, 0.56, mb=4.0),
            run("fedunet", 64, "add", 0, 0.20, 0.20, alpha="a0.1"),  # another partition
            run("local", 64, "add", 0, 0.79, 0.50),
            run("local", 64, "add", 1, 0.81, 0.50),
        ]
    )
    t = variants_table(runs, {"d": [64], "fusion": ["add"]})
    assert len(t) == 2 and set(t["method"]) == {"fedunet"} and set(t["alpha"]) == {"a0.5"}
    d16 = t[t["option"] == "d"].iloc[0]
    assert (d16["d"], d16["fusion"], d16["reference"], d16["pairs"]) == (16, "add", 64, 2)
    # differences -3 and -4 points: mean -3.5, sd 0.7071, t(1) = 12.706, half-width 12.706 * 0.5 = 6.353
    assert d16["final_pers_acc_diff_pts"] == pytest.approx(-3.5)
    assert (d16["final_pers_acc_ci_low"], d16["final_pers_acc_ci_high"]) == pytest.approx((-9.853, 2.853))
    assert d16["final_global_acc_diff_pts"] == pytest.approx(-1.5) and not d16["final_pers_acc_holds"]
    assert (d16["mb_up_per_client"], d16["mb_up_per_client_reference"]) == (pytest.approx(1.0), pytest.approx(4.0))
    concat = t[t["option"] == "fusion"].iloc[0]
    assert (concat["d"], concat["fusion"], concat["reference"]) == (64, "concat", "add")
    assert concat["final_pers_acc_diff_pts"] == pytest.approx(1.5)
    assert concat["final_global_acc_diff_pts"] == pytest.approx(1.0)


def test_comparisons_pair_fedunet_with_a_unet_method_at_the_same_reading_only(monkeypatch):
    """FedUNet at two readings; fedunet-unet (a U-Net) ran only the first, FedAvg (no U-Net) only its
    default: FedUNet's second reading is compared with FedAvg, never with fedunet-unet's other reading."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import comparisons_table

    def run(method, fusion, seed, pers, unet=True):
        return {"experiment": "e", "archset": "a", "method": method, "d": 64, "fusion": fusion, "alpha": "a0.5",
                "seed": seed, "final_pers_acc": pers, "final_global_acc": pers, "diverged": False, "unet": unet}  # fmt: skip

    runs = pd.DataFrame(
        [run("fedunet", f, s, 0.80 + 0.01 * s) for f in ("add", "add-bottleneck-linear") for s in (0, 1, 2)]
        + [run("fedunet-unet", "add", s, 0.70) for s in (0, 1, 2)]
        + [run("fedavg", "add", s, 0.60, unet=False) for s in (0, 1, 2)]
    )
    t = comparisons_table(runs).set_index(["fusion", "versus"])
    assert sorted(t.index) == [("add", "fedavg"), ("add", "fedunet-unet"), ("add-bottleneck-linear", "fedavg")]
    assert t.loc[("add-bottleneck-linear", "fedavg"), "final_pers_acc_diff_pts"] == pytest.approx(21.0)
    assert t.loc[("add", "fedunet-unet"), "pairs"] == 3


def test_holm_corrects_over_each_experiments_differences_and_skips_rows_without_a_claim(monkeypatch):
    """Hand-computed: experiment e has two rows of 3 pairs, so a family of 4 p-values (2 rows x 2
    protocols); experiment f's single row is its own family; a row of 2 pairs is in no family."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import holm_within_experiments

    from fedunet.stats import holm

    t = pd.DataFrame({
        "experiment": ["e", "e", "f", "e"], "pairs": [3, 3, 3, 2],
        "final_pers_acc_p": [0.01, 0.02, 0.02, 0.001], "final_global_acc_p": [0.3, 0.012, 0.5, 0.001],
        "final_pers_acc_holds": [True, True, True, True], "final_global_acc_holds": [False, True, False, True],
    })  # fmt: skip
    out = holm_within_experiments(t, ("final_pers_acc", "final_global_acc"))
    # e's family, sorted: 0.01 x4 = 0.04, 0.012 x3 = 0.036 -> 0.04, 0.02 x2 = 0.04, 0.3 x1 = 0.3;
    # f's: 0.02 x2 = 0.04, 0.5
    assert out["final_pers_acc_p_holm"].tolist()[:3] == pytest.approx([0.04, 0.04, 0.04])
    assert out["final_global_acc_p_holm"].tolist()[:3] == pytest.approx([0.3, 0.04, 0.5])
    assert holm([0.01, 0.02, 0.3, 0.012]) == pytest.approx([0.04, 0.04, 0.3, 0.04])
    assert out["final_pers_acc_p_holm"].isna().tolist() == [False, False, False, True]  # 2 pairs: no claim
    assert out["final_pers_acc_holds_holm"].tolist() == [True, True, True, False]
    assert out["final_global_acc_holds_holm"].tolist() == [False, True, False, False]
    one_family = holm_within_experiments(t.assign(experiment="e"), ("final_pers_acc", "final_global_acc"))
    # in one family of 6: 0.01 x6, 0.012 x5, 0.02 x4 = 0.08, 0.02 x3 -> 0.08: f's row no longer holds
    assert one_family.loc[2, "final_pers_acc_p_holm"] == pytest.approx(0.08) and not one_family.loc[2, "final_pers_acc_holds_holm"]


def test_progress_table_counts_each_experiments_finished_runs(monkeypatch):
    """Planned from the config, finished/flattened/diverged from the runs (one run in two experiments
    counts in both); an experiment with no finished run shows 0 of its planned runs."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import progress_table

    def run(exp, seed, flat, div, method="fedunet"):
        return {"experiment": exp, "run": f"a/{method}/s{seed}", "archset": "a", "method": method, "d": 64,
                "fusion": "add", "alpha": "a0.5", "seed": seed, "flattened": flat, "diverged": div}  # fmt: skip

    runs = pd.DataFrame(
        [run("e1", 0, True, False), run("e1", 1, False, True), run("e1", 0, True, False, "local"), run("e2", 0, True, False)]
    )
    t = progress_table(runs, {"e2": 3, "e1": 6, "e3": 2}).set_index("experiment")
    assert list(t.index) == ["e2", "e1", "e3"]
    assert t.loc["e1"][["planned", "finished", "flattened", "diverged", "seeds_min", "seeds_max"]].tolist() == [6, 3, 2, 1, 1, 2]
    assert t.loc["e3"][["planned", "finished", "flattened", "diverged"]].tolist() == [2, 0, 0, 0]
    asked = progress_table(runs, {"e2": 3, "e1": 6}, {"e1": "does it\n  help?"}).set_index("experiment")
    assert asked["question"].tolist() == ["", "does it help?"]  # the description, on one line


def _method_run(exp, method, alpha, glob, mb, seed=0, fusion="add"):
    """One run's row as the methods table reads it."""
    return {"experiment": exp, "run": f"{exp}/{method}/{fusion}/{alpha}/s{seed}", "archset": "a", "method": method, "d": 64,
            "fusion": fusion, "alpha": alpha, "seed": seed, "final_pers_acc": 0.9, "final_global_acc": glob,
            "best_pers_acc": 0.9, "best_global_acc": glob, "rounds": 40, "diverged": False, "flattened": True,
            "mb_up_per_client": mb, "mb_down_per_client": mb}  # fmt: skip


def test_methods_table_has_every_experiment_with_baselines_best_global_first_in_each_cell(monkeypatch):
    """Experiments e and f (a baseline each; e at two label skews) are in; g (FedUNet, its ablation, Local) is not;
    within each experiment, clients and skew, the best final global accuracy comes first, with its traffic."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import accuracy_table, methods_table

    run = _method_run
    runs = pd.DataFrame(
        [run("e", m, a, g, mb) for a in ("a0.1", "a0.5") for m, g, mb in (("fedunet", 0.5, 0.2), ("local", 0.6, 0), ("fd", 0.4, 0.001))]
        + [run("f", m, "a0.5", g, mb) for m, g, mb in (("fedunet", 0.5, 0.2), ("fedavg", 0.8, 0.9), ("local", 0.6, 0.0))]
        + [run("g", m, "a0.5", 0.5, 0.1) for m in ("fedunet", "local", "fedunet-unet")]
    )
    t = methods_table(runs, accuracy_table(runs))
    assert list(zip(t["experiment"], t["alpha"], t["method"])) == [
        ("e", "a0.1", "local"), ("e", "a0.1", "fedunet"), ("e", "a0.1", "fd"),
        ("e", "a0.5", "local"), ("e", "a0.5", "fedunet"), ("e", "a0.5", "fd"),
        ("f", "a0.5", "fedavg"), ("f", "a0.5", "local"), ("f", "a0.5", "fedunet"),
    ]  # fmt: skip
    assert t.set_index(["experiment", "alpha", "method"]).loc[("f", "a0.5", "fedavg"), "mb_up_per_client"] == pytest.approx(0.9)


def test_methods_markdown_shows_the_fusion_column_only_where_fusion_varies(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_markdown import methods_markdown
    from study_tables import accuracy_table, methods_table

    prov = {**PROV, "runs": 3}
    one = [_method_run("e", m, "a0.5", 0.5, 0.1) for m in ("fedunet", "local", "fd")]

    def header(runs):
        text = methods_markdown(methods_table(runs, accuracy_table(runs)), prov)
        return next(line for line in text.splitlines() if line.startswith("| "))

    assert "| fusion |" not in header(pd.DataFrame(one)) and "| d |" not in header(pd.DataFrame(one))
    two = pd.DataFrame(one + [_method_run("e", "fedunet", "a0.5", 0.6, 0.1, fusion="concat")])
    assert "| method | fusion | seeds |" in header(two)


def test_verdicts_say_what_the_intervals_show_and_claim_nothing_from_fewer_than_3_seeds(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_markdown import verdict

    from fedunet.stats import MIN_SEEDS_FOR_A_CLAIM

    assert verdict({"personalized": (0.2, False, False), "global": (-0.1, False, False)}, 3) == "no difference shown"
    mixed = {"personalized": (0.2, False, False), "global": (-0.68, True, True)}
    assert verdict(mixed, 3) == "personalized: no difference shown; global: lower"
    assert verdict({"personalized": (1.5, True, True), "global": (2.0, True, True)}, 5) == "higher"
    assert verdict({"personalized": (1.5, True, False), "global": (2.0, True, True)}, 5) == (
        "personalized: higher (uncorrected only); global: higher"
    )
    assert verdict({"personalized": (1.5, True, True), "global": (2.0, True, True)}, 2) == "too few seeds (2)"
    assert MIN_SEEDS_FOR_A_CLAIM == 3  # the rule the tables and the standard study's config share


def test_readings_table_gives_the_bottleneck_drop_with_its_interval(monkeypatch):
    """Hand-computed: drops of 1, 2 and 3 points within three runs: mean 2, half-width
    t(2) * 1 / sqrt(3) = 4.303 / 1.732 = 2.484; a cell whose ablation changes nothing has a zero drop."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from study_tables import diagnostics_table

    def run(reading, seed, acc, ablated):
        return {"experiment": "readings", "archset": "a", "reading": reading, "method": "fedunet", "seed": seed,
                "final_pers_acc": acc, "final_global_acc": 0.5, "pers_acc_backbone_only": 0.8, "pers_acc_unet_only": 0.4,
                "norm_backbone": 1.0, "norm_unet": 0.5, "pers_acc_no_bottleneck": ablated, "diverged": False}  # fmt: skip

    runs = pd.DataFrame(
        [run("tap", 0, 0.90, 0.89), run("tap", 1, 0.91, 0.89), run("tap", 2, 0.92, 0.89)]
        + [run("linear", s, 0.9, 0.9) for s in range(3)]
    )
    t = diagnostics_table(runs).set_index("reading")
    assert t.loc["tap", "bottleneck_drop_pts"] == pytest.approx(2.0)
    low, high = t.loc["tap", "bottleneck_drop_ci_low"], t.loc["tap", "bottleneck_drop_ci_high"]
    assert (low, high) == pytest.approx((2 - 2.484, 2 + 2.484), abs=1e-3) and not t.loc["tap", "bottleneck_drop_holds"]
    assert t.loc["linear", "bottleneck_drop_pts"] == pytest.approx(0.0)


def test_a_run_trained_with_another_config_stops_the_workflow(tmp_path):
    """A finished run whose run.yaml is not what the study asks for now (a config changed after it
    was committed) and of which snakemake has no record (a fresh clone) stops even a dry run, names
    the run and lists it for removal; restored, it passes. Where snakemake has the record it reruns
    the run instead: test_changed_settings_rerun_exactly_the_affected_jobs."""
    cfg = write_study(tmp_path)
    study = Study(yaml.safe_load(cfg.read_text()))
    key = sorted(study.runs)[0]
    run = tmp_path / study.out / "runs" / key.path
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "run.yaml").write_text(yaml.safe_dump({**study.run_config(key), "seed": 99}))
    r = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert r.returncode != 0
    assert "1 finished run(s) of study smoke were trained with another config than it asks for now (their run.yaml differs) and snakemake has no record" in r.stdout + r.stderr
    assert key.path in r.stdout + r.stderr
    listing = tmp_path / study.out / "logs" / "stale-runs.txt"
    assert listing.read_text().split() == [f"{study.out}/runs/{key.path}"]
    (run / "run.yaml").write_text(yaml.safe_dump(study.run_config(key)))
    r = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_every_figure_has_a_report_caption():
    """`snakemake --report` fails on a figure without its caption (workflow/rules/common.smk, figure_output)."""
    from fedunet.study import COMPARISONS_FIGURE, SEGMENTATION_FIGURE, SUMMARY_FIGURES

    captions = {p.stem for p in (REPO / "workflow" / "report").glob("*.rst")}
    figures = {"curves", "partition", COMPARISONS_FIGURE, SEGMENTATION_FIGURE, *SUMMARY_FIGURES.values()}
    assert {"table", "workflow", *figures} <= captions


def test_dry_run_of_the_paper_study_opens_no_dataset(tmp_path):
    def no_data(cfg):
        cfg["base"]["dataset"].update(root=str(tmp_path / "no-such-dir"), download=False)

    cfg = write_study(tmp_path, "config.yaml", no_data)
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout + r.stderr)
    # one job per run and per partition of the study's expansion (the schema's defaults filled in first)
    study = yaml.safe_load(cfg.read_text())
    validate(study, str(SCHEMA))
    expanded = Study(study)
    # 3 seeds x 4 alphas, and the segmentation experiment's own canvases for its 3 seeds
    assert len(expanded.runs) > 150 and len(expanded.partitions) == 12 + 3
    assert counts["train"] == len(expanded.runs) and counts["partition"] == len(expanded.partitions)
    assert counts["total"] == len(expanded.runs) + len(expanded.partitions) + 4  # costs, aggregate, figures, all
    assert not (tmp_path / "no-such-dir").exists()


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda c: c["experiments"]["noniid"].update(alphas=[0.1]), ["alphas", "noniid"]),
        (lambda c: c["architecture_sets"].update(odd=["vgg17"]), ["vgg17", "architecture_sets"]),
        (lambda c: c["experiments"]["noniid"].update(alpha=[-0.5]), ["-0.5", "noniid"]),
        (lambda c: c["experiments"]["fusion"].update(fusion=["sum"]), ["sum", "fusion"]),
        (
            lambda c: c["experiments"]["homogeneous"].update(architectures=["nope"]),
            ["experiments.homogeneous.architectures", "nope"],
        ),
        (lambda c: c["base"]["federated"].update(rounds=0), ["federated.rounds: 0 must be >= 1"]),
        (lambda c: c["experiments"]["fusion"].update(methods=["fedavg"]), ["experiment fusion", "same architecture"]),
    ],
)
def test_bad_study_config_fails_before_any_job(tmp_path, edit, fragments):
    cfg = write_study(tmp_path, "smoke.yaml", edit)
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert r.returncode != 0
    for fragment in fragments:
        assert fragment in r.stderr + r.stdout
    assert not (tmp_path / "results").exists()


SMOKE_RUNS = 34  # config/smoke.yaml expanded (tests/test_study.py checks the expansion)
SMOKE_ROUNDS = 3  # config/smoke.yaml: base.federated.rounds
RESUMED = re.compile(r"resumed \S+ at round (\d+)")
TIMING = re.compile(r"^(time_.*|elapsed_s)$")  # wall-clock columns: the only ones a resumed run may change


def unfinished_checkpoint(runs: Path) -> bool:
    """Whether some run has checkpointed a round before its last and not finished yet."""
    for manifest in runs.glob("**/checkpoint.json"):
        try:
            latest = json.loads(manifest.read_text())["checkpoints"][0]["round"]
        except (OSError, ValueError, KeyError, IndexError):
            continue  # removed or replaced under us
        if latest < SMOKE_ROUNDS and not (manifest.parent / "summary.json").exists():
            return True
    return False


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke study run once, interrupted mid-way (SIGTERM) and run again to the end."""
    workdir = tmp_path_factory.mktemp("smoke")
    cfg = write_study(workdir)
    assert yaml.safe_load(cfg.read_text())["base"]["federated"]["rounds"] == SMOKE_ROUNDS
    cmd = snakemake_command(workdir, "--cores", "2", "--configfile", str(cfg))
    runs = workdir / "results" / "smoke" / "runs"
    log = (workdir / "first-attempt.log").open("w")  # a file, not a pipe: a full pipe would stall snakemake
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Interrupt on observed progress, never after a fixed time: four finished runs, and a run
    # caught between two checkpoints (so that the rerun resumes it mid-training).
    while proc.poll() is None and not (len(list(runs.glob("**/summary.json"))) >= 4 and unfinished_checkpoint(runs)):
        time.sleep(0.05)
    log_tail = (workdir / "first-attempt.log").read_text()[-3000:]
    assert proc.poll() is None, "the smoke study ended before it could be interrupted:\n" + log_tail
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler or Ctrl-C would
    proc.wait()
    log.close()
    # Jobs snakemake had not yet seen finish lose their outputs: they count as interrupted.
    finished_before = {p: p.stat().st_mtime_ns for p in runs.glob("**/summary.json")}
    assert 2 <= len(finished_before) < SMOKE_RUNS, "the interruption came too late to test anything"
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return workdir, cfg, finished_before


def test_smoke_study_makes_every_table_and_figure(smoke):
    workdir, _, _ = smoke
    out = workdir / "results" / "smoke"
    for name in SMOKE_TABLES:
        assert (out / "tables" / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "bottleneck_tradeoff.png" in figures and "per_architecture.pdf" in figures
    assert any(f.startswith("partition_iid-s1-") and f.endswith(".png") for f in figures)
    assert "curves_homogeneous.png" in figures
    assert "readings_diagnostics.png" in figures and "comparisons.png" in figures
    assert len(figures) == 2 * 16
    md = (out / "tables" / "accuracy.md").read_text()
    assert "produced by the pipeline" in md and "commits" in md and "seeds [0, 1]" in md
    pvo = pd.read_csv(out / "tables" / "paper_vs_ours.csv")
    ours = pvo[pvo["claim"] == "communication per round, full synchronization"]
    # our own column, computed from the U-Net we build (the paper's column says 56.66 whatever we do)
    assert round(ours[ours["protocol"].str.startswith("bottleneck state_dict")]["ours"].item(), 2) == 56.66
    assert "not reproduced by us" in (out / "tables" / "paper_vs_ours.md").read_text()


def test_smoke_tables_count_divergence_convergence_and_pair_seeds(smoke):
    workdir, _, _ = smoke
    tables = workdir / "results" / "smoke" / "tables"
    runs = pd.read_csv(tables / "runs.csv")
    acc = pd.read_csv(tables / "accuracy.csv")
    assert {"diverged", "flattened", "final_pers_acc_ci95"} <= set(acc.columns)
    assert acc["diverged"].sum() == runs.drop_duplicates("run")["diverged"].sum()
    comp = pd.read_csv(tables / "comparisons.csv")
    row = comp[(comp["experiment"] == "homogeneous") & (comp["versus"] == "local")].iloc[0]
    mine = runs[(runs["experiment"] == "homogeneous") & (runs["method"] == "fedunet")].set_index("seed")
    theirs = runs[(runs["experiment"] == "homogeneous") & (runs["method"] == "local")].set_index("seed")
    diff = 100 * (mine["final_pers_acc"] - theirs["final_pers_acc"])
    assert row["pairs"] == 2 and row["final_pers_acc_diff_pts"] == pytest.approx(diff.mean())
    variants = pd.read_csv(tables / "variants.csv")
    row = variants[(variants["experiment"] == "bottleneck") & (variants["method"] == "fedunet")].squeeze()
    assert (row["option"], row["d"], str(row["reference"]), row["pairs"]) == ("d", 16, "32", 2)
    bottleneck = runs[(runs["experiment"] == "bottleneck") & (runs["method"] == "fedunet")]
    mine, theirs = (bottleneck[bottleneck["d"] == d].set_index("seed")["final_global_acc"] for d in (16, 32))
    assert row["final_global_acc_diff_pts"] == pytest.approx(100 * (mine - theirs).mean())
    readings = pd.read_csv(tables / "readings.csv")
    assert set(readings["reading"]) == {"add-decoder-linear", "add-bottleneck-linear", "add-decoder-conv"}
    # each cell is its runs' own numbers averaged over seeds (runs.csv, from each summary.json)
    exp = runs[runs["experiment"] == "readings"]
    for _, cell in readings.iterrows():
        mine = exp[(exp["archset"] == cell["archset"]) & (exp["reading"] == cell["reading"]) & (exp["method"] == cell["method"])]
        assert cell["seeds"] == mine["seed"].nunique() == 2
        for col in ("final_pers_acc", "pers_acc_unet_only", "pers_acc_backbone_only", "norm_unet", "pers_acc_no_bottleneck"):
            assert cell[f"{col}_mean"] == pytest.approx(mine[col].mean()), col


def test_smoke_tables_hold_each_runs_summary(smoke):
    """runs.csv is each run's summary.json, and a cell of accuracy.csv the mean of its runs."""
    workdir, _, _ = smoke
    out = workdir / "results" / "smoke"
    runs = pd.read_csv(out / "tables" / "runs.csv")
    for _, row in runs.drop_duplicates("run").iterrows():
        final = json.loads((out / "runs" / row["run"] / "summary.json").read_text())["final"]
        assert (row["final_pers_acc"], row["final_global_acc"]) == (final["pers_acc"], final["global_acc"]), row["run"]
    acc = pd.read_csv(out / "tables" / "accuracy.csv")
    cell = acc[(acc["experiment"] == "bottleneck") & (acc["method"] == "fedunet") & (acc["d"] == 16)].squeeze()
    mine = runs[(runs["experiment"] == "bottleneck") & (runs["method"] == "fedunet") & (runs["d"] == 16)]
    assert len(mine) == 2 and cell["final_global_acc_mean"] == pytest.approx(mine["final_global_acc"].mean())


def test_smoke_scripts_log_what_they_wrote(smoke):
    """aggregate.py and figures.py write their declared log: what they read and every file they wrote."""
    workdir, _, _ = smoke
    out = workdir / "results" / "smoke"
    aggregate_log = (out / "logs" / "aggregate.log").read_text()
    assert f"read {SMOKE_RUNS} runs" in aggregate_log
    for name in SMOKE_TABLES:
        if name.endswith(".csv"):
            assert f"wrote {name} (" in aggregate_log, name
    assert "wrote provenance.json" in aggregate_log
    figures_log = (out / "logs" / "figures.log").read_text()
    for png in (out / "figures").glob("*.png"):
        assert f"wrote {png.name} and {png.stem}.pdf" in figures_log, png.name


def test_interrupted_study_finishes_without_retraining_finished_runs(smoke):
    workdir, _, finished_before = smoke
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was retrained"
    runs = list((workdir / "results" / "smoke" / "runs").glob("**/summary.json"))
    assert len(runs) == SMOKE_RUNS
    assert not list((workdir / "results").glob("**/*.tmp")), "partial files left behind"


def without_timing(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv)
    return table.drop(columns=[c for c in table.columns if TIMING.match(c)])


def test_interrupted_runs_match_uninterrupted_ones(smoke, monkeypatch):
    """A run resumed by the workflow mid-training ends exactly where an uninterrupted run does:
    every round of metrics.csv and clients.csv equal but for wall-clock times."""
    workdir, _, _ = smoke
    monkeypatch.chdir(workdir)  # run configs name their partition relative to the study directory
    from fedunet.federated import train

    runs = workdir / "results" / "smoke" / "runs"
    logs = workdir / "results" / "smoke" / "logs" / "train"
    resumed = {}
    for summary in sorted(runs.glob("**/summary.json")):
        run = summary.parent
        found = RESUMED.findall((logs / f"{run.relative_to(runs)}.log").read_text())
        if found and 1 <= int(found[-1]) < SMOKE_ROUNDS:
            resumed[run] = int(found[-1])
    assert resumed, "the interruption left no run to resume mid-training (see the smoke fixture)"
    for run in list(resumed)[:2]:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        reference = workdir / "reference" / run.relative_to(runs)
        train(cfg, reference)
        for name in ("metrics.csv", "clients.csv"):
            ours, theirs = without_timing(run / name), without_timing(reference / name)
            assert len(ours) >= SMOKE_ROUNDS, name  # a row per round (and client, in clients.csv)
            pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=f"{run.relative_to(runs)}/{name}")


def test_html_report_has_every_figure_with_its_caption(smoke):
    workdir, cfg, _ = smoke
    report = workdir / "results" / "smoke" / "report.html"
    r = snakemake(workdir, "--configfile", str(cfg), "--report", str(report))
    assert r.returncode == 0, r.stderr[-3000:]
    html = report.read_text()
    for name in ("bottleneck_tradeoff.png", "per_architecture.png", "accuracy.md"):
        assert name in html, name
    assert "The knee is where a larger bottleneck stops paying" in html  # a caption, from workflow/report/


def test_second_invocation_has_nothing_to_do(smoke):
    workdir, cfg, _ = smoke
    r = snakemake(workdir, "-n", "--configfile", str(cfg))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_fresh_clone_regenerates_tables_without_retraining(smoke, tmp_path):
    """git checkout sets file times in arbitrary order; committed runs must not be retrained."""
    workdir, _, _ = smoke
    clone = tmp_path / "clone"
    shutil.copytree(workdir / "results", clone / "results")  # no .snakemake: as in a fresh clone
    cfg = write_study(clone)
    files = [p for p in (clone / "results").rglob("*") if p.is_file()]
    random.Random(0).shuffle(files)
    now = time.time()
    for i, p in enumerate(files):
        os.utime(p, (now + i * 1e-3, now + i * 1e-3))
    r = snakemake(clone, "-n", "--configfile", str(cfg))
    counts = job_counts(r.stdout + r.stderr)
    assert not {"train", "partition", "costs"} & set(counts), counts
    (clone / "results" / "smoke" / "tables" / "accuracy.csv").unlink()
    r = snakemake(clone, "--cores", "2", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert "train" not in counts and counts.get("aggregate") == 1
    old = (workdir / "results" / "smoke" / "tables" / "accuracy.csv").read_text()
    assert (clone / "results" / "smoke" / "tables" / "accuracy.csv").read_text() == old


def test_changed_settings_rerun_exactly_the_affected_jobs(smoke, tmp_path):
    workdir, cfg, _ = smoke

    def dry_run(edit):
        study = yaml.safe_load(cfg.read_text())
        edit(study)
        changed = tmp_path / f"changed-{len(list(tmp_path.iterdir()))}.yaml"
        changed.write_text(yaml.safe_dump(study))
        r = snakemake(workdir, "-n", "--configfile", str(changed))
        return job_counts(r.stdout + r.stderr)

    reordered = dry_run(lambda s: None)  # same settings, keys in another order: nothing to do
    assert not {"train", "partition"} & set(reordered), reordered
    lr = dry_run(lambda s: s["base"].setdefault("optimizer", {}).update(lr=0.02))
    assert lr.get("train") == SMOKE_RUNS and "partition" not in lr  # every run trains with it
    cnn = dry_run(lambda s: s["architecture_sets"].update(cnn=["cnn", "cnn"]))
    assert cnn.get("train") == 6 and "partition" not in cnn  # cnn x {fedunet, fedavg, local} x 2 seeds, no other run
    split = dry_run(lambda s: s["base"]["partition"].update(min_samples=21))
    assert split.get("train") == SMOKE_RUNS and split.get("partition") == 4


# ------------------------------------------------------------------ a segmentation experiment in a study

SEGMENTATION_DATASET = {
    "name": "synthetic-composite",
    "synthetic": {"num_classes": 3, "channels": 1, "size": 8, "train_size": 240, "test_size": 60},
    "composite": {"canvas_size": 16, "garments": [1, 2], "test_canvases": 40},
}


@pytest.fixture(scope="module")
def segmentation_study(tmp_path_factory):
    """The smoke study cut to one classification experiment plus a segmentation experiment, run once."""
    workdir = tmp_path_factory.mktemp("segmentation-study")

    def edit(cfg):
        cfg["architecture_sets"]["seg"] = ["encdec-tiny", "fcn-cnn"]
        cfg["experiments"] = {
            "homogeneous": {"architectures": ["cnn"], "methods": ["fedunet", "local"]},
            "segmentation": {
                "architectures": ["seg"],
                "methods": ["fedunet", "local", "fedunet-unet"],
                "base": {"dataset": SEGMENTATION_DATASET},
            },
        }

    cfg = write_study(workdir, edit=edit)
    r = snakemake(workdir, "--cores", "2", "--configfile", str(cfg))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return workdir, cfg


def test_segmentation_experiment_adds_its_tables_and_figure(segmentation_study):
    workdir, cfg = segmentation_study
    out = workdir / "results" / "smoke"
    runs = pd.read_csv(out / "tables" / "segmentation_runs.csv")
    assert runs["run"].nunique() == 6 and set(runs["method"]) == {"fedunet", "local", "fedunet-unet"}
    assert set(runs["dataset"]) == {"synthetic-composite"}
    for _, row in runs.iterrows():  # each row is its run's summary.json
        final = json.loads((out / "runs" / row["run"] / "summary.json").read_text())["final"]
        assert (row["final_pers_miou"], row["final_global_pixel_acc"]) == (final["pers_miou"], final["global_pixel_acc"])
    cells = pd.read_csv(out / "tables" / "segmentation.csv")
    fedunet = cells[cells["method"] == "fedunet"].squeeze()
    mine = runs[runs["method"] == "fedunet"]
    assert fedunet["seeds"] == 2 and fedunet["final_global_miou_mean"] == pytest.approx(mine["final_global_miou"].mean())
    assert fedunet["final_pers_pixel_acc_std"] == pytest.approx(mine["final_pers_pixel_acc"].std())
    assert fedunet["dataset"].startswith("synthetic-composite (composites")
    comp = pd.read_csv(out / "tables" / "segmentation_comparisons.csv")
    local = comp[comp["versus"] == "local"].squeeze()
    theirs = runs[runs["method"] == "local"].set_index("seed")
    diff = 100 * (mine.set_index("seed")["final_pers_miou"] - theirs["final_pers_miou"])
    assert local["pairs"] == 2 and local["final_pers_miou_diff_pts"] == pytest.approx(diff.mean())
    md = (out / "tables" / "segmentation.md").read_text()
    assert md.startswith("# Semantic segmentation (synthetic-composite: composites)") and "FedUNet - X, global mIoU" in md
    assert "from 6 runs" in md and "datasets: synthetic-composite;" in md  # its own runs' provenance
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"segmentation_examples.png", "segmentation_examples.pdf", "curves_segmentation.png"} <= figures
    pixel_partitions = [p for p in (out / "partitions").glob("*.counts.csv") if "pixels_class_0" in p.read_text()]
    assert len(pixel_partitions) == 2 and {f"partition_{p.name[: -len('.counts.csv')]}.png" for p in pixel_partitions} <= figures
    assert "wrote segmentation_examples.png" in (out / "logs" / "figures.log").read_text()
    r = snakemake(workdir, "-n", "--configfile", str(cfg))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_segmentation_experiment_changes_no_classification_table(segmentation_study, monkeypatch, tmp_path):
    """The classification tables of a study with a segmentation experiment are those of the same
    study without it (footers included), but for the time they were generated."""
    workdir, cfg = segmentation_study
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from aggregate import aggregate

    out = workdir / "results" / "smoke"
    study_cfg = yaml.safe_load(cfg.read_text())
    validate(study_cfg, str(SCHEMA))
    study = Study(study_cfg)
    only = [e for e in study.run_table() if e["experiment"] != "segmentation"]
    info = {"name": "smoke", "config_files": [cfg.name], "defaults": study_cfg["defaults"]}
    aggregate(only, out / "runs", tmp_path, out / "tables" / "costs.json", info)
    generated = re.compile(r"on \d{4}-\d\d-\d\dT[\d:+]+ from")
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != "provenance.json")
    assert "accuracy.md" in names and "runs.csv" in names and not any(n.startswith("segmentation") for n in names)
    for name in names:
        ours = generated.sub("on <time> from", (out / "tables" / name).read_text())
        alone = generated.sub("on <time> from", (tmp_path / name).read_text())
        assert ours == alone, name


def test_tables_judge_divergence_by_todays_rule_on_each_clients_losses(monkeypatch):
    """A run flagged by an older engine (no chance-level floor: FedTGP lambda 10 in
    results/htfl-fmnist) is judged again from its clients' losses; a client's real explosion and a
    round mean far above its first rounds' still count."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from aggregate import _run_facts

    config = {"dataset": {"name": "fashion-mnist"}, "federated": {"divergence_factor": 10}}  # no num_classes: ln 10 from here
    summary = {"dataset": "fashion-mnist", "config": config, "clients": [{}, {}],
               "communication": {"initial_sync_bytes": 0, "payload_bytes_up_per_client": 0, "shared_tensor_bytes": 0},
               "events": [{"event": "diverged", "round": 2, "client": 1}],
               "diverged": {"any": True}}  # fmt: skip

    def facts(client_losses: dict[int, list[float]], means: list[float]) -> dict:
        rounds = len(means)
        m = pd.DataFrame({"round": range(1, rounds + 1), "train_loss": means, "pers_acc": [0.5] * rounds,
                          "global_acc": [0.5] * rounds, "participants": 2, "bytes_up": 0, "bytes_down": 0})  # fmt: skip
        c = pd.DataFrame([{"round": r + 1, "client": k, "participated": True, "train_loss": loss}
                          for k, series in client_losses.items() for r, loss in enumerate(series)])  # fmt: skip
        c.loc[len(c)] = {"round": 2, "client": 0, "participated": False, "train_loss": float("nan")}  # sat out: no loss
        return _run_facts(summary, m, c)

    assert not facts({0: [0.5, 0.4, 0.3], 1: [0.08, 1.5, 1.07]}, [0.3, 0.9, 0.7])["diverged"]
    assert facts({0: [0.5, 0.4, 0.3], 1: [1.5, 27.0, 64.0]}, [1.0, 14.0, 32.0])["diverged"]
    assert facts({0: [0.5, 0.4, float("nan")], 1: [0.5, 0.4, 0.3]}, [0.5, 0.4, 0.3])["diverged"]
    assert facts({0: [0.5, 0.4, 0.3], 1: [0.5, 0.4, 0.3]}, [2.5, 2.4, 30.0])["diverged"]  # the round means' rule
