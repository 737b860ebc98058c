"""scripts/device-check.sh, the one prepared check for the first GPU machine, runs on every CPU run
with ``--dry`` (tiny sizes), so that it cannot rot before a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_device_check_dry_runs_every_stage_and_renders(tmp_path):
    # --python: an interpreter that has torch, not this checkout's .venv (an offline GPU machine's
    # image); the script must make fedunet importable from the checkout itself
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    r = subprocess.run(
        ["bash", "scripts/device-check.sh", "--dry", "--python", sys.executable, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - start
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (summary,) = tmp_path.glob("device-check-*.json")
    data = json.loads(summary.read_text())
    assert data["dry"] is True
    assert [s["stage"] for s in data["stages"]] == ["cuda-tests", "paper-setting", "benchmarks", "step-variants", "estimate"]
    assert all(s["rc"] == 0 and not s["skipped"] for s in data["stages"]), data["stages"]
    assert data["cuda_tests"] and all(t["outcome"] in ("skipped", "passed") for t in data["cuda_tests"])
    (logs,) = (tmp_path / "device-check-logs").iterdir()  # one folder per run, named as its summary
    assert summary.name == f"device-check-{logs.name}.json" and (logs / "stages.jsonl").exists()
    (paper,) = tmp_path.glob("paper-setting-*.json")
    runs = json.loads(paper.read_text())["runs"]
    assert [run["d"] for run in runs] == [16]
    for run in runs:
        assert run["train_images_per_s"] > 0 and run["peak_host_bytes"] > 0 and run["estimate"]["wall_s"] > 0
    (steps,) = tmp_path.glob("step-variants-*.json")
    variants = json.loads(steps.read_text())["results"]
    assert [v["variant"] for v in variants][0] == "device defaults" and len(variants) == 8
    assert all(v["ms_per_step"] > 0 and v["steps"] >= 1 for v in variants) and variants[0]["ratio_to_defaults"] == 1
    runtimes = {v["variant"]: v["runtime"] for v in variants}  # each variant changed what it names, as resolved
    assert runtimes["deterministic off"]["deterministic"] is False and runtimes["device defaults"]["deterministic"] is True
    assert runtimes["NCHW (no channels_last)"]["channels_last"] is False and runtimes["compiled"]["compile"] is True
    assert runtimes["bf16 autocast"]["bf16"] is True and runtimes["device defaults"]["bf16"] is False
    assert runtimes["compiled, channels_last"]["channels_last"] is True
    graphs = next(v for v in variants if v["variant"] == "compiled, reduce-overhead")  # off CUDA: plain compile
    assert graphs["runtime"]["compile"] is True and graphs["runtime"]["compile_mode"] == "default"
    assert graphs["note"] == "compile_mode reduce-overhead not applied: inductor's, aot_eager here"
    assert {v["variant"]: v["method"] for v in variants}["backbone alone (no U-Net)"] == "fedavg"
    (est,) = tmp_path.glob("estimate-*.json")
    assert json.loads(est.read_text())["totals"]["job_s"] > 0
    readme = (tmp_path / "README.md").read_text()
    for section in ("## Paper setting: paper-setting-", "## Study cost: estimate-", "## Step variants: step-variants-",
                    "## Device check: device-check-"):
        assert section in readme
    assert f"| compiled, reduce-overhead ({graphs['note']}) |" in readme  # the table says what really ran
    assert took < 300, f"the dry run took {took:.0f} s"


def test_only_reruns_the_named_stages_and_refuses_unknown_ones(tmp_path):
    r = subprocess.run(
        ["bash", "scripts/device-check.sh", "--dry", "--only", "cuda-tests", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (summary,) = tmp_path.glob("device-check-*.json")
    stages = {s["stage"]: s for s in json.loads(summary.read_text())["stages"]}
    assert stages["cuda-tests"]["rc"] == 0 and not stages["cuda-tests"]["skipped"]
    assert all(stages[name]["skipped"] for name in ("paper-setting", "benchmarks", "step-variants", "estimate"))
    assert not list(tmp_path.glob("paper-setting-*.json"))
    bad = subprocess.run(
        ["bash", "scripts/device-check.sh", "--dry", "--only", "benchmark"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown stage benchmark" in bad.stderr and "cuda-tests, paper-setting" in bad.stderr


def test_a_failing_variant_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """On an H200, inductor's backward raised for one variant and the stage lost the rest; now the
    error is kept in the JSON and the README, the other variants are timed, and the exit code says
    so (except for a probe, whose failure is a finding about the installed torch)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render
    import step_variants

    def fake(dry, device, model, runtime, sections, epochs):
        if runtime.get("compile"):
            raise AssertionError("expected size 64==64, stride 9==1 at dim=1\nmore")
        ms = 10.0 if runtime.get("bf16") else 20.0
        return {"architecture": "vgg16", "method": "fedunet", "width": 0.125, "d": 16, "samples": 64, "steps": 1,
                "warmup_s": 0.1, "epoch_s": [ms / 1e3], "ms_per_step": ms, "images_per_s": 64e3 / ms, "runtime": {}}

    monkeypatch.setattr(step_variants, "time_epochs", fake)
    assert step_variants.main(["--dry", "--out", str(tmp_path)]) == 1  # "compiled" failed: not a probe
    (path,) = tmp_path.glob("step-variants-*.json")
    results = {r["variant"]: r for r in json.loads(path.read_text())["results"]}
    assert set(results) == set(step_variants.VARIANTS)
    assert results["compiled"]["error"] == "AssertionError: expected size 64==64, stride 9==1 at dim=1"
    assert results["compiled, channels_last"]["probe"] is True and not results["compiled"]["probe"]
    assert results["bf16 autocast"]["ratio_to_defaults"] == 0.5
    readme = "\n".join(render.device_sections(tmp_path))
    assert "| narrow | | compiled | failed: `AssertionError: expected size 64==64, stride 9==1 at dim=1` |" in readme
    assert "| 10.00 | 6,400 | 0.50 |" in readme  # the bf16 row, against the defaults'

    for name in tmp_path.glob("step-variants-*.json"):
        name.unlink()
    assert step_variants.main(["--dry", "--out", str(tmp_path), "-k", "channels_last"]) == 0  # only the probe failed
    (path,) = tmp_path.glob("step-variants-*.json")
    assert [r["variant"] for r in json.loads(path.read_text())["results"]] == [
        "device defaults", "NCHW (no channels_last)", "compiled, channels_last"]


def test_a_check_that_ran_no_cuda_test_says_so(tmp_path):
    """--only step-variants runs no CUDA test: the rendered line says "none ran", not an empty list."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render

    check = {"device_label": "NVIDIA-H200", "total_s": 241, "budget_s": 300, "dry": False, "cuda_tests": [],
             "stages": [{"stage": "cuda-tests", "rc": None, "seconds": 0, "skipped": True},
                        {"stage": "step-variants", "rc": 124, "seconds": 223, "skipped": False}]}
    (tmp_path / "device-check-NVIDIA-H200-20261127-005511.json").write_text(json.dumps(check))
    readme = "\n".join(render.device_sections(tmp_path))
    assert "241 s of a 300 s budget. CUDA-marked tests: none ran." in readme
    assert "| cuda-tests | skipped | 0 |" in readme and "| step-variants | 124 | 223 |" in readme
