import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from fedunet import methods, models, study
from fedunet.config import load_yaml
from fedunet.segmodel import SEG_BACKBONES
from fedunet.stats import MIN_SEEDS_FOR_A_CLAIM
from fedunet.study import RunKey, Study, StudyError, alpha_label, finished_so_far


def study_cfg(**experiments):
    return {
        "study": "t",
        "seeds": [0, 1],
        "base": {"dataset": {"name": "synthetic"}, "partition": {"num_clients": 4}},
        "architecture_sets": {"hetero": ["vgg11", "cnn"], "cnn": ["cnn"]},
        "defaults": {"architectures": ["hetero"], "methods": ["fedunet"], "d": [32], "fusion": ["add"], "alpha": [0.5]},
        "experiments": experiments or {"a": {}},
    }


def test_grid_expansion_and_deduplication():
    s = Study(study_cfg(bottleneck={"d": [16, 32]}, fusion={"fusion": ["add", "concat"]}, noniid={"alpha": [0.1, "iid"]}))
    # 2 d + 1 concat + 2 alphas, each x 2 seeds; the default point is shared by all three experiments
    assert len(s.runs) == 2 * (1 + 1 + 1 + 2)
    shared = RunKey("hetero", "fedunet", 32, "add", "a0.5", 0)
    assert s.runs[shared] == ["bottleneck", "fusion"]
    assert RunKey("hetero", "fedunet", 32, "add", "iid", 1) in s.runs


def test_methods_without_unet_ignore_d_and_fusion():
    s = Study(study_cfg(homogeneous={"architectures": ["cnn"], "methods": ["fedavg"], "d": [16, 32, 64]}))
    assert {k.d for k in s.runs} == {32} and len(s.runs) == 2


def test_experiments_with_baselines_are_those_with_a_method_fedunet_is_measured_against():
    """The methods table's experiments: FedUNet, its whole-U-Net ablation and Local make none, a baseline
    beside them does; a finished-only study counts only the methods with a finished run."""
    own, three = {"methods": ["fedunet", "local", "fedunet-unet"]}, {"methods": ["fedunet", "local", "fedproto"]}
    s = Study(study_cfg(own=own, three=three))
    assert s.experiments_with_baselines("classification") == ["three"]
    assert s.experiments_with_baselines("segmentation") == []
    no_baseline_finished = s.finished_only(lambda k: k.method != "fedproto")
    assert no_baseline_finished.experiments_with_baselines("classification") == []


def test_run_config_is_base_plus_grid_point():
    s = Study(study_cfg(noniid={"alpha": ["iid"]}))
    key = RunKey("hetero", "fedunet", 32, "add", "iid", 1)
    cfg = s.run_config(key)
    assert cfg["seed"] == 1 and cfg["partition"] == {"num_clients": 4, "scheme": "iid"}
    assert cfg["model"]["architectures"] == ["vgg11", "cnn"] and cfg["model"]["unet"]["d"] == 32
    assert cfg["name"] == "t/hetero/fedunet/d32-add-iid/seed1"
    assert key.path == "hetero/fedunet/d32-add-iid/seed1" and key.partition == "iid-s1"


def test_alpha_labels_are_readable():
    assert alpha_label(0.5) == "a0.5" and alpha_label(1) == "a1" and alpha_label("iid") == "iid"


def test_unknown_architecture_set_names_the_experiment():
    with pytest.raises(StudyError, match="experiments.x.architectures: unknown set\\(s\\) \\['nope'\\]"):
        Study(study_cfg(x={"architectures": ["nope"]}))


def test_runs_are_checked_against_the_run_schema_before_any_job():
    with pytest.raises(StudyError) as err:
        Study(study_cfg(homogeneous={"methods": ["fedavg"]}))  # fedavg on heterogeneous clients
    assert "experiment homogeneous" in str(err.value) and "same architecture" in str(err.value)
    cfg = study_cfg()
    cfg["base"]["federated"] = {"rounds": -1}
    with pytest.raises(StudyError, match="federated.rounds: -1 must be >= 1"):
        Study(cfg)


def test_figure_names_follow_the_experiments():
    s = Study(study_cfg(bottleneck={"d": [16, 32]}, homogeneous={"architectures": ["cnn"]}))
    names = s.figure_names()
    assert names[:3] == ["curves_bottleneck", "curves_homogeneous", "bottleneck_tradeoff"]
    assert names[3] == "comparisons"  # of every classification study (FedUNet alone: it says there is none)
    assert [n.rsplit("-", 1)[0] for n in names[4:]] == ["partition_a0.5-s0", "partition_a0.5-s1"]


def test_finished_only_keeps_the_finished_runs_and_their_experiments():
    s = Study(study_cfg(bottleneck={"d": [16, 32]}, homogeneous={"architectures": ["cnn"]}))
    done = {RunKey("hetero", "fedunet", 16, "add", "a0.5", 0), RunKey("hetero", "fedunet", 32, "add", "a0.5", 1)}
    so_far = s.finished_only(lambda k: k in done)
    assert set(so_far.runs) == done and so_far.planned == s.planned == len(s.runs) == 6
    assert so_far.planned_by_task == {"classification": 6}
    assert so_far.planned_by_experiment == s.planned_by_experiment == {"bottleneck": 4, "homogeneous": 2}
    assert list(so_far.cfg["experiments"]) == ["bottleneck"]  # homogeneous has no finished run
    assert so_far.figure_names()[:2] == ["curves_bottleneck", "bottleneck_tradeoff"]
    assert [r["run"] for r in so_far.run_table()] == sorted(k.path for k in done)
    assert len(s.runs) == 6 and "homogeneous" in s.cfg["experiments"]  # the full study is untouched
    with pytest.raises(StudyError, match="finished_only: no run"):
        s.finished_only(lambda k: False)


def test_footers_say_finished_so_far_only_for_a_partial_study():
    assert finished_so_far(30, 30) == "" and finished_so_far(30, 12) == ""
    assert finished_so_far(16, 165) == " (the runs finished so far, of 165 planned)"


def test_a_finished_run_trained_with_another_config_is_stale(tmp_path):
    """run.yaml (what the run was trained with) against the config the study asks for now; a run
    without a summary or a run.yaml is never stale."""
    s = Study({**study_cfg(), "results": str(tmp_path)})
    key = sorted(s.runs)[0]
    run = tmp_path / "t" / "runs" / key.path
    run.mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump(s.run_config(key), sort_keys=True))
    assert not s.stale(key)  # no summary.json yet: in flight
    (run / "summary.json").write_text("{}")
    assert not s.stale(key)
    changed = Study({**study_cfg(), "results": str(tmp_path), "base": {**study_cfg()["base"], "model": {"width": 0.5}}})
    assert changed.stale(key)
    (run / "run.yaml").unlink()
    assert not changed.stale(key)


def test_partition_files_are_named_by_their_settings():
    s = Study(study_cfg(noniid={"alpha": [0.1]}))
    key = RunKey("hetero", "fedunet", 32, "add", "a0.1", 0)
    name = s.partition_file(key)
    assert name.startswith("a0.1-s0-") and len(name.split("-")[-1]) == 8
    other = study_cfg(noniid={"alpha": [0.1]})
    other["base"]["partition"]["min_samples"] = 21
    assert Study(other).partition_file(key) != name  # other settings, other file
    lr = study_cfg(noniid={"alpha": [0.1]})
    lr["base"]["optimizer"] = {"lr": 0.5}
    assert Study(lr).partition_file(key) == name  # training settings do not touch partitions


def test_unknown_architecture_or_method_names_the_field_and_the_registered_ones():
    cfg = study_cfg(x={"methods": ["fedsgd"]})
    cfg["architecture_sets"]["cnn"] = ["vgg12"]
    with pytest.raises(StudyError) as err:
        Study(cfg)
    assert err.value.problems == [
        f"architecture_sets.cnn.0: 'vgg12' is not allowed; allowed values: {', '.join(models.available() + list(SEG_BACKBONES))}",
        f"experiments.x.methods.0: 'fedsgd' is not allowed; allowed values: {', '.join(methods.available())}",
    ]


def test_unknown_key_in_an_experiment_is_reported_once_and_by_name():
    with pytest.raises(StudyError) as err:
        Study(study_cfg(x={"alphas": [0.1]}, y={"methods": ["fedsgd"]}))
    assert len(err.value.problems) == 2  # y's bad method is not also reported as an unexpected key
    assert "experiments.x: Unevaluated properties are not allowed ('alphas' was unexpected)" in err.value.problems
    assert err.value.problems[1].startswith("experiments.y.methods.0: 'fedsgd' is not allowed")


@pytest.fixture
def scratch_registries(monkeypatch):
    """Backbones and methods registered by a test are forgotten after it."""
    for registry in (models.REGISTRY, methods.REGISTRY):
        monkeypatch.setattr(registry, "_members", dict(registry._members))


def test_a_newly_registered_architecture_and_method_are_valid_in_a_study(scratch_registries):
    schema_file = load_yaml(study.SCHEMA_FILE.read_text())
    cfg = study_cfg(new={"architectures": ["toy"], "methods": ["toy-method"]})
    cfg["architecture_sets"]["toy"] = ["toy-net", "cnn"]
    with pytest.raises(StudyError, match="'toy-net' is not allowed"):
        Study(cfg)

    @models.register("toy-net")
    def toy_net(in_channels, input_size, width): ...

    @methods.register
    class ToyMethod(methods.get("local")):
        name = "toy-method"

    s = Study(cfg)
    assert RunKey("toy", "toy-method", 32, "add", "a0.5", 0) in s.runs
    assert s.run_config(RunKey("toy", "toy-method", 32, "add", "a0.5", 0))["model"]["architectures"] == ["toy-net", "cnn"]
    assert load_yaml(study.SCHEMA_FILE.read_text()) == schema_file  # the schema file is as it was


@pytest.mark.parametrize("path", ["config/config.yaml", "config/quick.yaml", "config/smoke.yaml", "config/htfl.yaml"])
def test_shipped_studies_expand(path):
    cfg = load_yaml(open(path).read())
    cfg.setdefault("seeds", [0, 1, 2])
    study = Study(cfg)
    assert len(study.runs) > 10


def test_fusion_readings_set_mode_source_and_head_and_the_base_reading_runs_once():
    s = Study(study_cfg(readings={"fusion": ["add", "add-decoder-linear", "concat-bottleneck-conv"]}))
    labels = {k.fusion for k in s.runs}
    assert labels == {"add", "concat-bottleneck-conv"}  # add-decoder-linear is the base reading: same run as add
    model = s.run_config(RunKey("hetero", "fedunet", 32, "concat-bottleneck-conv", "a0.5", 0))["model"]
    assert (model["fusion"], model["fusion_source"], model["fusion_head"]) == ("concat", "bottleneck", "conv")
    assert "fusion_source" not in s.run_config(RunKey("hetero", "fedunet", 32, "add", "a0.5", 0))["model"]


def test_study_configs_expand(tmp_path):
    studies = {name: Study(load_yaml((REPO / "config" / f"{name}.yaml").read_text())) for name in ("smoke", "fmnist")}
    assert len(studies["smoke"].runs) == 34  # tests/test_workflow.py SMOKE_RUNS
    assert len(studies["fmnist"].runs) >= 3 * 40
    seeds = {}  # every cell of the standard study has the seeds a claim needs
    for key in studies["fmnist"].runs:
        seeds.setdefault((key.archset, key.method, key.d, key.fusion, key.alpha), set()).add(key.seed)
    assert min(len(s) for s in seeds.values()) >= MIN_SEEDS_FOR_A_CLAIM


SEGMENTATION_BASE = {
    "dataset": {
        "name": "synthetic-composite",
        "synthetic": {"channels": 1, "size": 8, "num_classes": 3},
        "composite": {"canvas_size": 16, "garments": [1, 2]},
    }
}


def test_an_experiment_base_makes_a_segmentation_experiment_with_its_own_partitions():
    cfg = study_cfg(a={}, seg={"architectures": ["seg"], "methods": ["fedunet", "local"], "base": SEGMENTATION_BASE})
    cfg["architecture_sets"]["seg"] = ["encdec-tiny"]
    s = Study(cfg)
    cls, seg = RunKey("hetero", "fedunet", 32, "add", "a0.5", 0), RunKey("seg", "fedunet", 32, "add", "a0.5", 0)
    assert s.task(cls) == "classification" and s.task(seg) == "segmentation"
    assert s.run_config(seg)["dataset"]["name"] == "synthetic-composite" and s.run_config(cls)["dataset"] == {"name": "synthetic"}
    assert s.experiments_of_task("segmentation") == ["seg"] and s.experiments_of_task("classification") == ["a"]
    # the same alpha and seed, other canvases: another partition file, each found by its digest
    assert s.partition_file(seg) != s.partition_file(cls) and s.partition_file(seg).startswith("a0.5-s0-")
    for key in (cls, seg):
        label, digest = s.partition_file(key).rsplit("-", 1)
        assert s.partition_config(label, digest)["dataset"] == s.run_config(key)["dataset"]
    assert len(s.partitions) == 4 and "segmentation_examples" in s.figure_names()
    assert "segmentation_examples" not in Study(study_cfg(a={})).figure_names()
    # the classification runs' partitions keep their names: a segmentation experiment changes none
    assert s.partition_file(cls) == Study(study_cfg(a={})).partition_file(cls)


def test_a_run_shared_by_experiments_with_other_bases_is_refused():
    with pytest.raises(StudyError, match="experiments.b.base: run hetero/fedunet/d32-add-a0.5/seed0 is also in experiment a"):
        Study(study_cfg(a={}, b={"base": {"optimizer": {"lr": 0.5}}}))
    Study(study_cfg(a={"base": {"optimizer": {"lr": 0.5}}}, b={"base": {"optimizer": {"lr": 0.5}}}))  # the same base: fine


def test_a_segmentation_experiment_is_checked_like_any_run():
    cfg = study_cfg(seg={"architectures": ["hetero"], "methods": ["fedproto"], "base": SEGMENTATION_BASE})
    with pytest.raises(StudyError) as err:
        Study(cfg)
    assert "experiment seg" in str(err.value) and "method: 'fedproto' has no per-pixel version" in str(err.value)


def test_summaries_of_an_experiment_or_of_some_of_its_methods():
    s = Study(study_cfg(cmp={"methods": ["fedunet", "local", "fedavg"], "architectures": ["cnn"]}, other={}))
    every = s.summaries_of("cmp")
    assert len(every) == 3 * 2 and all(p.startswith("results/t/runs/cnn/") and p.endswith("/summary.json") for p in every)
    some = s.summaries_of("cmp:fedunet,local")
    assert len(some) == 4 and not any("/fedavg/" in p for p in some) and set(some) < set(every)
    with pytest.raises(StudyError, match="experiment 'nope' is not in study t; allowed: cmp, other"):
        s.summaries_of("nope")
    with pytest.raises(StudyError, match="experiment 'cmp' has no method 'fml'; allowed: fedavg, fedunet, local"):
        s.summaries_of("cmp:fedunet,fml")


def _study_in_order(tmp_path, *experiments):
    """scripts/study-in-order.sh on config/smoke.yaml with a stand-in for snakemake that records its targets."""
    calls = tmp_path / "calls"
    stub = tmp_path / "snakemake"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    r = subprocess.run(
        ["bash", "scripts/study-in-order.sh", "config/smoke.yaml", *experiments],
        cwd=REPO, env={**os.environ, "SMK": str(stub)}, capture_output=True, text=True, timeout=300,
    )
    return r, calls.read_text().splitlines() if calls.exists() else []


def test_study_in_order_trains_each_experiment_s_runs_in_the_order_named(tmp_path):
    r, calls = _study_in_order(tmp_path, "readings:fedunet,local", "fusion")
    assert r.returncode == 0, r.stderr
    smoke = Study(load_yaml((REPO / "config" / "smoke.yaml").read_text()))
    assert calls[0] == "--unlock --configfile config/smoke.yaml"  # no snakemake alive here: a lock left is stale
    assert [c.split(" --rerun-incomplete ")[1].split() if " --rerun-incomplete " in c else [] for c in calls[1:]] == [
        smoke.summaries_of("readings:fedunet,local"),
        smoke.summaries_of("fusion"),
        [],  # then everything: tables and figures
    ]


def test_study_in_order_checks_every_name_before_training_anything(tmp_path):
    r, calls = _study_in_order(tmp_path, "fusion", "readings:fedunet,nosuch")
    assert r.returncode != 0 and "has no method 'nosuch'" in r.stderr and "allowed: fedunet" in r.stderr
    assert calls == []  # not even the valid first experiment
    r, calls = _study_in_order(tmp_path, "nosuch")
    assert r.returncode != 0 and "allowed: homogeneous" in r.stderr and calls == []


def test_study_in_order_refuses_to_start_beside_a_live_snakemake(tmp_path):
    """A second study beside a running one would train the same runs twice: it must stop before
    lifting the running one's lock."""
    live = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=REPO)
    try:
        cmdline = Path(f"/proc/{live.pid}/cmdline")
        deadline = time.monotonic() + 10
        while not cmdline.read_bytes().startswith(b"snakemake\0") and time.monotonic() < deadline:
            time.sleep(0.01)  # until bash has become "snakemake"
        r, calls = _study_in_order(tmp_path, "fusion")
    finally:
        live.kill()
        live.wait()
    assert r.returncode != 0 and f"a snakemake is already running in {REPO} (pid {live.pid})" in r.stderr
    assert calls == []  # no unlock, no training
