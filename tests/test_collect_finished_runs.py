"""scripts/collect-finished-runs.py: finished runs come over with their logs and partitions; runs in
flight and what only resuming needs stay behind."""

import subprocess
import sys

from helpers import REPO


def test_only_finished_runs_come_over_without_checkpoints(tmp_path):
    src, dst = tmp_path / "train" / "results" / "s", tmp_path / "repo" / "results" / "s"
    done, busy = src / "runs" / "a" / "fedunet" / "d64" / "seed0", src / "runs" / "a" / "local" / "d64" / "seed0"
    for run in (done, busy):
        run.mkdir(parents=True)
        for name in ("metrics.csv", "ckpt-000003.pt", "checkpoint.json", ".lock"):
            (run / name).write_text(name)
    (done / "summary.json").write_text("{}")
    (src / "logs" / "train" / "a" / "fedunet" / "d64").mkdir(parents=True)
    (src / "logs" / "train" / "a" / "fedunet" / "d64" / "seed0.log").write_text("log")
    (src / "partitions").mkdir()
    (src / "partitions" / "p.json").write_text("{}")
    r = subprocess.run([sys.executable, REPO / "scripts" / "collect-finished-runs.py", src, dst], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 finished runs copied" in r.stdout
    copied = dst / "runs" / "a" / "fedunet" / "d64" / "seed0"
    assert sorted(p.name for p in copied.iterdir()) == ["metrics.csv", "summary.json"]
    assert not (dst / "runs" / "a" / "local").exists()
    assert (dst / "logs" / "train" / "a" / "fedunet" / "d64" / "seed0.log").read_text() == "log"
    assert (dst / "partitions" / "p.json").exists()


def test_a_directory_without_runs_is_a_clear_error(tmp_path):
    script = REPO / "scripts" / "collect-finished-runs.py"
    r = subprocess.run([sys.executable, script, tmp_path, tmp_path / "x"], capture_output=True, text=True)
    assert r.returncode != 0 and "has no runs/ directory" in r.stderr
