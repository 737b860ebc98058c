"""The command line end to end, as users call it (subprocesses): train, validate, partition
(fedunet/cli.py).  ``info``: test_cli_info.py; ``estimate``: test_cli_estimate.py."""

import json

import yaml
from helpers import run_fedunet as fedunet
from helpers import tiny_raw


def write_config(tmp_path, raw=None):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw if raw is not None else tiny_raw()))
    return path


def train(tmp_path, out, *args, raw=None):
    """``fedunet train`` of ``raw`` (the tiny config by default) into ``tmp_path / out``."""
    return fedunet("train", "--config", str(write_config(tmp_path, raw)), "--out", str(tmp_path / out), *args)


def test_train_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "out"
    r = train(tmp_path, "out", "--set", "federated.rounds=3", "--set", "seed=2")
    assert r.returncode == 0, r.stderr
    assert "personalized" in r.stdout and "MB up/client/round" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["seed"] == 2 and summary["status"] == "complete"
    assert (out / "metrics.csv").read_text().count("\n") == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["federated"]["rounds"] == 3


def test_progress_line_shows_round_accuracy_bytes_and_eta(tmp_path):
    raw = tiny_raw()
    raw["runtime"]["progress"] = True
    r = train(tmp_path, "o", raw=raw)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stderr.splitlines() if "round 2/2" in ln][0]
    for part in ("pers ", "global ", "MB up/client", "s/round", "ETA"):
        assert part in line


def test_bad_config_fails_early_naming_the_field(tmp_path):
    raw = tiny_raw()
    raw["model"]["fusion"] = "multiply"
    raw["federated"]["rondos"] = 3
    r = train(tmp_path, "o", raw=raw)
    assert r.returncode == 2
    assert "model.fusion: 'multiply' is not allowed; allowed values: add, concat" in r.stderr
    assert "unknown key(s) 'rondos'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # nothing started


def test_bad_override_fails_early(tmp_path):
    r = train(tmp_path, "o", "--set", "partition.alpha=-1")
    assert r.returncode == 2 and "partition.alpha: -1 must be > 0" in r.stderr and "Traceback" not in r.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
    raw = tiny_raw(dataset={"name": "cifar10", "root": str(tmp_path / "nodata"), "download": False})
    r = train(tmp_path, "o", raw=raw)
    assert r.returncode == 3 and "cifar-10-batches-py" in r.stderr and "Traceback" not in r.stderr


def test_validate_prints_the_resolved_config(tmp_path):
    r = fedunet("validate", "--config", str(write_config(tmp_path)))
    assert r.returncode == 0
    assert yaml.safe_load(r.stdout)["optimizer"]["momentum"] == 0.9


def test_partition_command_writes_file_and_counts(tmp_path):
    partition, counts = tmp_path / "p.bin", tmp_path / "counts.csv"
    r = fedunet("partition", "--config", str(write_config(tmp_path)), "--out", str(partition), "--counts", str(counts))
    assert r.returncode == 0, r.stderr
    rows = counts.read_text().splitlines()
    assert rows[0] == "client,class_0,class_1,class_2" and len(rows) == 5
    assert sum(int(x) for row in rows[1:] for x in row.split(",")[1:]) == 240
    # the training run accepts it, and refuses one made for other settings
    out = train(tmp_path, "o", "--set", f"partition.file={partition}")
    assert out.returncode == 0, out.stderr
    bad = train(tmp_path, "o2", "--set", f"partition.file={partition}", "--set", "partition.alpha=0.3")
    assert bad.returncode == 2 and "partition.alpha: file has 1.0, config has 0.3" in bad.stderr
