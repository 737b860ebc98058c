"""The smoke study on a real SLURM cluster through the SLURM executor plugin.

CI starts a single-node cluster first (scripts/slurm/start.sh, see .ci/run). Without a
cluster the test is skipped, unless FEDUNET_REQUIRE_SLURM=1 says one must be there.
"""

import json
import os
import shutil
import subprocess

import pytest
from helpers import REPO, SMOKE_TABLES, snakemake_command, write_study

from fedunet.config import load_yaml
from fedunet.study import Study

pytestmark = pytest.mark.slurm


def cluster_partition() -> str | None:
    if shutil.which("sbatch") is None:
        return None
    r = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        name, state = line.split()
        if state in ("idle", "mix", "alloc"):
            return name.rstrip("*")
    return None


def test_smoke_study_runs_through_sbatch(tmp_path):
    partition = cluster_partition()
    if partition is None:
        if os.environ.get("FEDUNET_REQUIRE_SLURM") == "1":
            pytest.fail("FEDUNET_REQUIRE_SLURM=1 but no SLURM cluster answers (scripts/slurm/start.sh)")
        pytest.skip("no SLURM cluster here")

    def one_seed(cfg):
        cfg["seeds"] = [0]
        cfg["resources"]["slurm"] = {"partition": partition}

    cfg = write_study(tmp_path, edit=one_seed)
    cmd = ["timeout", "-k", "30", "1200"] + snakemake_command(
        tmp_path,
        "--configfile",
        str(cfg),
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        # the CI cluster has no accounting database: poll with squeue, quickly
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--jobs",
        "4",
    )
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = tmp_path / "results" / "smoke"
    for name in SMOKE_TABLES:
        assert (out / "tables" / name).exists(), name
    summaries = list((out / "runs").glob("**/summary.json"))
    expected = len(Study(load_yaml(cfg.read_text())).runs)  # the one-seed smoke study, expanded
    assert len(summaries) == expected
    job_ids = {json.loads(p.read_text())["provenance"]["slurm_job_id"] for p in summaries}
    assert None not in job_ids and len(job_ids) == expected, "every training run must have been its own SLURM job"
