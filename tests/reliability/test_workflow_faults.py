"""A training job that keeps failing: retried per the profile, then reported by name while the
other jobs finish (--keep-going); nothing partial reaches results/."""

import os
import subprocess

import yaml
from helpers import REPO, snakemake_command


def test_failing_job_is_retried_then_reported_while_the_others_finish(tmp_path, counts):
    study = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    study["seeds"] = [0]
    study["experiments"] = {"homogeneous": study["experiments"]["homogeneous"]}
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study))
    env = {**os.environ, "FEDUNET_FAULT_FAIL": "cnn/local/"}
    cmd = snakemake_command(tmp_path, "--configfile", str(cfg), "--cores", "2", "--retries", "1", "--keep-going")
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    counts["workflow jobs made to fail"] += 1
    assert r.returncode != 0
    assert out.count("Error in rule train") == 2, "one failure and one failed retry"
    assert "Trying to restart job" in out
    assert "wildcards: archset=cnn, method=local" in out
    assert "injected failure for run" in out  # the reason, not only the log's path
    runs = tmp_path / "results" / "smoke" / "runs" / "cnn"
    assert (runs / "fedunet" / "d32-add-a0.5" / "seed0" / "summary.json").exists()
    assert (runs / "fedavg" / "d32-add-a0.5" / "seed0" / "summary.json").exists()
    assert not (runs / "local" / "d32-add-a0.5" / "seed0" / "summary.json").exists()
    log = tmp_path / "results" / "smoke" / "logs" / "train" / "cnn" / "local" / "d32-add-a0.5" / "seed0.log"
    assert "injected failure" in log.read_text()
    assert not list((tmp_path / "results").rglob("*.tmp")) and not list((tmp_path / "results").rglob(".*.tmp"))
    assert not (tmp_path / "results" / "smoke" / "tables" / "accuracy.csv").exists()  # no table from a partial study
