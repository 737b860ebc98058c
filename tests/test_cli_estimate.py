"""``fedunet estimate`` on the command line (fedunet/cli_estimate.py): it prices the committed study
configs, writes JSON, and refuses bad input with a message."""

from __future__ import annotations

import json

from helpers import run_fedunet as fedunet


def test_cli_prices_the_committed_study_configs():
    for study in ("config/quick.yaml", "config/config.yaml"):
        r = fedunet("estimate", study, "--tflops", "10")
        assert r.returncode == 0, r.stderr
        for part in ("total (unique)", "mem_mb >=", "runtime >=", "heterogeneous", "bottleneck"):
            assert part in r.stdout, (study, part, r.stdout)
    paper = fedunet("estimate", "config/config.yaml", "--tflops", "10")
    assert "GPU-h" in paper.stdout and "GPU with >=" in paper.stdout, "the paper study asks for one GPU per job"


def test_cli_estimate_json_and_given_images_per_s(tmp_path):
    out = tmp_path / "est.json"
    r = fedunet("estimate", "config/smoke.yaml", "--images-per-s", "cnn=1000", "--tflops", "0.05", "--json", str(out), "--runs")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["totals"]["runs"] >= 1 and data["totals"]["job_s"] > 0
    assert data["prices"]["given_images_per_s"] == {"cnn": 1000.0}
    assert set(data["experiments"]) and data["slurm"]["mem_mb"] >= 1000
    bad = fedunet("estimate", "config/smoke.yaml")
    assert bad.returncode == 2 and "--measure" in bad.stderr and "Traceback" not in bad.stderr
    missing = fedunet("estimate", "nope.yaml", "--tflops", "1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
