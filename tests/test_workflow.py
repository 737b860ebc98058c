"""The Snakemake workflow end to end: config validation, the smoke study, reruns, fresh clones.

Each test runs snakemake in its own working directory (``--directory``), so nothing is
written into the repository.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The workflow run in ``workdir`` by the interpreter running the tests."""
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args]


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout, cwd=workdir)


def write_study(workdir: Path, name: str = "smoke.yaml", edit=None) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    if edit:
        edit(cfg)
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


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


def test_dry_run_of_the_paper_study_opens_no_dataset(tmp_path):
    def no_data(cfg):
        cfg["base"]["dataset"].update(root=str(tmp_path / "no-such-dir"), download=False)

    cfg = write_study(tmp_path, "config.yaml", no_data)
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train"] == 171 and counts["partition"] == 12 and counts["total"] > 180
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


EXPECTED_TABLES = [
    "accuracy.csv",
    "accuracy.md",
    "communication.csv",
    "communication.md",
    "compute.csv",
    "compute.md",
    "paper_vs_ours.csv",
    "paper_vs_ours.md",
    "comparisons.csv",
    "comparisons.md",
    "readings.csv",
    "readings.md",
    "runs.csv",
    "curves.csv",
    "per_architecture.csv",
    "provenance.json",
]


SMOKE_RUNS = 34  # config/smoke.yaml expanded (tests/test_study.py checks the expansion)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke study run once, interrupted mid-way (SIGTERM) and run again to the end."""
    workdir = tmp_path_factory.mktemp("smoke")
    cfg = write_study(workdir)
    cmd = snakemake_command(workdir, "--cores", "2", "--configfile", str(cfg))
    runs = workdir / "results" / "smoke" / "runs"
    log = (workdir / "first-attempt.log").open("w")  # a file, not a pipe: a full pipe would stall snakemake
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Interrupt on observed progress (four finished runs), never after a fixed time.
    while proc.poll() is None and len(list(runs.glob("**/summary.json"))) < 4:
        time.sleep(0.2)
    assert proc.poll() is None, "the smoke study ended before it could be interrupted:\n" + (workdir / "first-attempt.log").read_text()[-3000:]
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
    for name in EXPECTED_TABLES:
        assert (out / "tables" / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "bottleneck_tradeoff.png" in figures and "per_architecture.pdf" in figures
    assert any(f.startswith("partition_iid-s1-") and f.endswith(".png") for f in figures)
    assert "curves_homogeneous.png" in figures
    assert "readings_diagnostics.png" in figures
    assert len(figures) == 2 * 15
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
    readings = pd.read_csv(tables / "readings.csv")
    assert set(readings["reading"]) == {"add-decoder-linear", "add-bottleneck-linear", "add-decoder-conv"}
    assert readings["pers_acc_unet_only_mean"].between(0, 1).all()


def test_interrupted_study_finishes_without_retraining_finished_runs(smoke):
    workdir, _, finished_before = smoke
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was retrained"
    runs = list((workdir / "results" / "smoke" / "runs").glob("**/summary.json"))
    assert len(runs) == SMOKE_RUNS
    assert not list((workdir / "results").glob("**/*.tmp")), "partial files left behind"


def test_interrupted_runs_match_uninterrupted_ones(smoke, monkeypatch):
    """A run resumed by the workflow ends exactly where an uninterrupted run does."""
    workdir, _, _ = smoke
    monkeypatch.chdir(workdir)  # run configs name their partition relative to the study directory
    from fedunet.federated import train

    runs = workdir / "results" / "smoke" / "runs"
    logs = workdir / "results" / "smoke" / "logs" / "train"
    every = sorted(p.parent for p in runs.glob("**/summary.json"))
    resumed = [r for r in every if "resumed" in (logs / f"{r.relative_to(runs)}.log").read_text()]
    checked = 0
    for run in (resumed + [r for r in every if r not in resumed])[:2]:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        reference = train(cfg, workdir / "reference" / run.relative_to(runs))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["final"]["pers_acc"] == reference["final"]["pers_acc"]
        assert summary["final"]["global_acc"] == reference["final"]["global_acc"]
        checked += 1
    assert checked == 2


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
    assert lr.get("train") == 26 and "partition" not in lr
    split = dry_run(lambda s: s["base"]["partition"].update(min_samples=21))
    assert split.get("train") == 26 and split.get("partition") == 4
