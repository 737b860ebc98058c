"""The command line end to end, as users call it (subprocesses)."""

import json
import subprocess
import sys

import yaml
from helpers import tiny_raw


def fedunet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedunet", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def write_config(tmp_path, raw=None):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw if raw is not None else tiny_raw()))
    return path


def test_train_end_to_end_through_the_cli(tmp_path):
    cfg = write_config(tmp_path)
    out = tmp_path / "out"
    r = fedunet("train", "--config", str(cfg), "--out", str(out), "--set", "federated.rounds=3", "--set", "seed=2")
    assert r.returncode == 0, r.stderr
    assert "personalized" in r.stdout and "MB up/client/round" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["seed"] == 2 and summary["status"] == "complete"
    assert (out / "metrics.csv").read_text().count("\n") == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["federated"]["rounds"] == 3


def test_progress_line_shows_round_accuracy_bytes_and_eta(tmp_path):
    raw = tiny_raw()
    raw["runtime"]["progress"] = True
    r = fedunet("train", "--config", str(write_config(tmp_path, raw)), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stderr.splitlines() if "round 2/2" in ln][0]
    for part in ("pers ", "global ", "MB up/client", "s/round", "ETA"):
        assert part in line


def test_bad_config_fails_early_naming_the_field(tmp_path):
    raw = tiny_raw()
    raw["model"]["fusion"] = "multiply"
    raw["federated"]["rondos"] = 3
    r = fedunet("train", "--config", str(write_config(tmp_path, raw)), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "model.fusion: 'multiply' is not allowed; allowed values: add, concat" in r.stderr
    assert "unknown key(s) 'rondos'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # nothing started


def test_bad_override_fails_early(tmp_path):
    r = fedunet("train", "--config", str(write_config(tmp_path)), "--out", str(tmp_path / "o"), "--set", "partition.alpha=-1")
    assert r.returncode == 2 and "partition.alpha: -1 must be > 0" in r.stderr and "Traceback" not in r.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
    raw = tiny_raw(dataset={"name": "cifar10", "root": str(tmp_path / "nodata"), "download": False})
    r = fedunet("train", "--config", str(write_config(tmp_path, raw)), "--out", str(tmp_path / "o"))
    assert r.returncode == 3 and "cifar-10-batches-py" in r.stderr and "Traceback" not in r.stderr


def test_validate_prints_the_resolved_config(tmp_path):
    r = fedunet("validate", "--config", str(write_config(tmp_path)))
    assert r.returncode == 0
    assert yaml.safe_load(r.stdout)["optimizer"]["momentum"] == 0.9


def test_partition_command_writes_file_and_counts(tmp_path):
    r = fedunet(
        "partition",
        "--config",
        str(write_config(tmp_path)),
        "--out",
        str(tmp_path / "p.bin"),
        "--counts",
        str(tmp_path / "counts.csv"),
    )
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "counts.csv").read_text().splitlines()
    assert rows[0] == "client,class_0,class_1,class_2" and len(rows) == 5
    assert sum(int(x) for row in rows[1:] for x in row.split(",")[1:]) == 240
    # the training run accepts it, and refuses one made for other settings
    out = fedunet(
        "train",
        "--config",
        str(write_config(tmp_path)),
        "--out",
        str(tmp_path / "o"),
        "--set",
        f"partition.file={tmp_path / 'p.bin'}",
    )
    assert out.returncode == 0, out.stderr
    bad = fedunet(
        "train",
        "--config",
        str(write_config(tmp_path)),
        "--out",
        str(tmp_path / "o2"),
        "--set",
        f"partition.file={tmp_path / 'p.bin'}",
        "--set",
        "partition.alpha=0.3",
    )
    assert bad.returncode == 2 and "partition.alpha: file has 1.0, config has 0.3" in bad.stderr


def test_info_shows_the_papers_byte_figures():
    r = fedunet("info", "--architectures", "vgg16", "cnn")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    d1024 = next(ln for ln in lines if ln.strip().startswith("1024"))
    d128 = next(ln for ln in lines if ln.strip().startswith("128 "))
    vgg16 = next(ln for ln in lines if ln.strip().startswith("vgg16"))
    assert "14,161,920" in d1024 and "56.66" in d1024
    assert "221,952" in d128 and "0.89" in d128
    assert "14,728,266" in vgg16 and "58.9" in vgg16
    assert "GFLOPs" in r.stdout


def test_info_methods_lists_every_method():
    r = fedunet("info", "--methods")
    assert r.returncode == 0
    for name in ("fedunet", "fedunet-unet", "fedavg", "local"):
        assert name in r.stdout
