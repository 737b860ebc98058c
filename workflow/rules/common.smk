# Expansion of the study grid, paths and resources shared by the rules.
import os
import sys

from snakemake.exceptions import WorkflowError

from fedunet.study import Study, StudyError

try:
    STUDY = Study(config)
except StudyError as e:
    raise WorkflowError(str(e)) from None

OUT = STUDY.out
PYTHON = sys.executable  # the interpreter running snakemake also runs fedunet (venvs, SLURM nodes)
RUN = "{archset}/{method}/d{d}-{fusion}-{alpha}/seed{seed}"

wildcard_constraints:
    archset="|".join(sorted(config["architecture_sets"])),
    method="|".join(sorted({k.method for k in STUDY.runs})),
    d=r"\d+",
    fusion=r"(add|concat)(-(decoder|bottleneck|multiscale)-(linear|conv))?",
    alpha=r"iid|a[0-9.e+-]+",
    seed=r"\d+",
    digest=r"[0-9a-f]{8}",


def run_dir(key):
    return f"{OUT}/runs/{key.path}"


RUN_DIRS = [run_dir(k) for k in sorted(STUDY.runs)]
SUMMARIES = [f"{d}/summary.json" for d in RUN_DIRS]
PARTITION_COUNTS = [f"{OUT}/partitions/{p}.counts.csv" for p in STUDY.partitions]


def partition_of(wildcards):
    return f"{OUT}/partitions/{STUDY.partition_file(key_of(wildcards))}.bin"


def partition_config_checked(wildcards):
    label = f"{wildcards.alpha}-s{wildcards.seed}"
    if STUDY.partition_digest(label) != wildcards.digest:
        raise WorkflowError(f"partition {label}-{wildcards.digest} does not match the current settings")
    return STUDY.partition_config(label)


def as_yaml(obj):
    import yaml

    return yaml.safe_dump(obj, sort_keys=True)


def key_of(wildcards):
    from fedunet.study import RunKey

    return RunKey(wildcards.archset, wildcards.method, int(wildcards.d), wildcards.fusion, wildcards.alpha, int(wildcards.seed))


def slurm_resources():
    """Partition and account from the study config, else the environment, else the cluster's defaults."""
    slurm = config["resources"]["slurm"]
    out = {}
    partition = slurm["partition"] or os.environ.get("FEDUNET_SLURM_PARTITION")
    account = slurm["account"] or os.environ.get("FEDUNET_SLURM_ACCOUNT")
    if partition:
        out["slurm_partition"] = partition
    if account:
        out["slurm_account"] = account
    return out


SLURM = slurm_resources()
TRAIN = config["resources"]["train"]
GPU = {"gpu": TRAIN["gpu"]} if TRAIN["gpu"] else {}

if TRAIN["gpu"] and TRAIN["gpu_model"]:
    GPU["gpu_model"] = TRAIN["gpu_model"]
