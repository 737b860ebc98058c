# What the rules share: the study grid, its paths, resources, and every helper function
# (rule files hold rules only).
import base64
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from fedunet.study import RunKey, Study, StudyError, finished_so_far

try:
    STUDY = Study(config)
except StudyError as e:
    raise WorkflowError(str(e)) from None

OUT = STUDY.out
if config.get("finished_only"):  # tables and figures of the runs finished so far; trains nothing
    try:
        STUDY = STUDY.finished_only(lambda k: os.path.exists(f"{OUT}/runs/{k.path}/summary.json"))
    except StudyError as e:
        raise WorkflowError(str(e)) from None


def snakemake_recorded(path):
    """Whether snakemake has a metadata record of ``path`` (its default file persistence, under
    .snakemake/metadata): where it has one, its params trigger reruns a job whose config changed."""
    b64 = base64.urlsafe_b64encode(path.encode()).decode()
    parts = [b64[i : i + 254] for i in range(0, len(b64), 254)]  # long names split as snakemake does
    return os.path.exists(os.path.join(".snakemake", "metadata", *["@" + p for p in parts[:-1]], parts[-1]))


# A finished run trained with another config than the study asks for now, of which snakemake has no
# record (a fresh clone: committed runs are never retrained for their file times), would stay in the
# tables unnoticed: it stops the workflow, even a dry run. Its directory is listed in a file, to be
# removed (and so retrained) on purpose. Where snakemake has the record, it reruns the run itself.
STALE = sorted(
    k for k in STUDY.runs if STUDY.stale(k) and not snakemake_recorded(f"{OUT}/runs/{k.path}/summary.json")
)
if STALE:
    listing = f"{OUT}/logs/stale-runs.txt"
    os.makedirs(os.path.dirname(listing), exist_ok=True)
    with open(listing, "w") as f:
        f.writelines(f"{OUT}/runs/{k.path}\n" for k in STALE)
    shown = ", ".join(k.path for k in STALE[:3]) + (f" and {len(STALE) - 3} more" if len(STALE) > 3 else "")
    raise WorkflowError(
        f"{len(STALE)} finished run(s) of study {STUDY.name} were trained with another config than it asks for "
        f"now (their run.yaml differs) and snakemake has no record of them, so it would keep them: {shown}; all "
        f"listed in {listing}. Restore the config they were trained with, or remove them to retrain them: "
        f"xargs rm -r < {listing}"
    )
RUN = "{archset}/{method}/d{d}-{fusion}-{alpha}/seed{seed}"
ENV = "../envs/fedunet.yaml"  # the conda environment of every rule, relative to workflow/rules/

wildcard_constraints:
    archset="|".join(sorted(config["architecture_sets"])),
    method="|".join(sorted({k.method for k in STUDY.runs})),
    d=r"\d+",
    fusion=r"(add|concat)(-(decoder|bottleneck|multiscale)-(linear|conv))?",
    alpha=r"iid|a[0-9.e+-]+",
    seed=r"\d+",
    digest=r"[0-9a-f]{8}",


# ------------------------------------------------------------------ paths

SUMMARIES = [f"{OUT}/runs/{k.path}/summary.json" for k in sorted(STUDY.runs)]
PARTITION_COUNTS = [f"{OUT}/partitions/{p}.counts.csv" for p in STUDY.partitions]
# Classification tables come from the classification runs; a segmentation experiment (a segmentation
# dataset in its base) adds its own tables and figure, and changes none of the others.
CLASSIFICATION = [k for k in sorted(STUDY.runs) if STUDY.task(k) == "classification"]
SEGMENTATION = [k for k in sorted(STUDY.runs) if STUDY.task(k) == "segmentation"]
TABLE_NAMES = ["accuracy", "rounds", "communication", "compute", "paper_vs_ours"] if CLASSIFICATION else []
if STUDY.experiments_with_baselines("classification"):
    TABLE_NAMES.append("methods")
TABLES = [f"{OUT}/tables/{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "md")]
if CLASSIFICATION:
    TABLES += [f"{OUT}/tables/{name}" for name in ("runs.csv", "curves.csv", "per_architecture.csv")]
SEGMENTATION_TABLES = [f"{OUT}/tables/segmentation_{name}.csv" for name in ("runs", "curves")] if SEGMENTATION else []
if SEGMENTATION:
    TABLES += [f"{OUT}/tables/segmentation.{ext}" for ext in ("csv", "md")] + SEGMENTATION_TABLES
    TABLES.append(f"{OUT}/tables/segmentation_comparisons.csv")
TABLES += [f"{OUT}/tables/progress.{ext}" for ext in ("csv", "md")] + [f"{OUT}/tables/provenance.json"]
FIGURES = [f"{OUT}/figures/{name}.{ext}" for name in STUDY.figure_names() for ext in ("png", "pdf")]
CLASSIFICATION_SUMMARIES = [f"{OUT}/runs/{k.path}/summary.json" for k in CLASSIFICATION]
# the runs whose examples.npz the segmentation figure shows (written before their summary.json)
SEGMENTATION_SUMMARIES = [f"{OUT}/runs/{k.path}/summary.json" for k in SEGMENTATION]
# measured by the costs job: every classification backbone of the study, every d of the study plus the paper's two
STUDY_ARCHS = sorted({a for s in {k.archset for k in CLASSIFICATION} for a in config["architecture_sets"][s]})
STUDY_D = sorted({k.d for k in CLASSIFICATION} | {128, 1024})
COSTS = [f"{OUT}/tables/costs.json"] if CLASSIFICATION else []
# what a footer adds when the tables hold only the runs finished so far
SO_FAR = f", from {len(STUDY.runs)} runs{finished_so_far(len(STUDY.runs), STUDY.planned)}" if len(STUDY.runs) < STUDY.planned else ""
CONFIG_FILES = [os.path.relpath(p) for p in workflow.overwrite_configfiles] or ["config/config.yaml"]

# ------------------------------------------------------------------ resources

TRAIN = config["resources"]["train"]
GPU = {"gpu": TRAIN["gpu"]} if TRAIN["gpu"] else {}
if TRAIN["gpu"] and TRAIN["gpu_model"]:
    GPU["gpu_model"] = TRAIN["gpu_model"]


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

# The conda environment (workflow/envs/fedunet.yaml) installs this checkout from here.
os.environ.setdefault("FEDUNET_BENCH_ROOT", os.path.dirname(os.path.abspath(workflow.basedir)))


# ------------------------------------------------------------------ functions used by the rules


def python(wildcards, input):
    """The interpreter that runs fedunet: the rule's conda environment's under `--sdm conda`, else
    the one running snakemake (a virtual environment's; SLURM jobs run that one too).  Taking
    `input` makes it a derived param, which Snakemake leaves out of its params rerun trigger:
    another interpreter path (another checkout or venv) is not another computation."""
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


def key_of(wildcards):
    return RunKey(wildcards.archset, wildcards.method, int(wildcards.d), wildcards.fusion, wildcards.alpha, int(wildcards.seed))


def run_dir(wildcards):
    return f"{OUT}/runs/{key_of(wildcards).path}"


def partition_of(wildcards):
    return f"{OUT}/partitions/{STUDY.partition_file(key_of(wildcards))}.bin"


def partition_config_checked(wildcards):
    label = f"{wildcards.alpha}-s{wildcards.seed}"
    try:
        return STUDY.partition_config(label, wildcards.digest)
    except StudyError:
        raise WorkflowError(f"partition {label}-{wildcards.digest} does not match the current settings") from None


def as_yaml(obj):
    import yaml

    return yaml.safe_dump(obj, sort_keys=True)


def run_config_yaml(wildcards):
    return as_yaml(STUDY.run_config(key_of(wildcards)))


def partition_config_yaml(wildcards):
    return as_yaml(partition_config_checked(wildcards))


def first_run_config(wildcards, input):
    """The run.yaml beside the first run's summary: the settings `fedunet info` measures with."""
    return os.path.join(os.path.dirname(input.runs[0]), "run.yaml")


def tables_dir(wildcards, output):
    """The study's tables folder, from a rule's outputs (results/<study>/tables/* or figures/*)."""
    return os.path.join(os.path.dirname(os.path.dirname(output[0])), "tables")


def table_output(path):
    if path.endswith(".md"):
        return report(path, caption="../report/table.rst", category="Tables")
    return path


def figure_output(path):
    name = os.path.basename(path).rsplit(".", 1)[0]
    kind = name.split("_", 1)[0]
    caption = {"curves": "curves", "partition": "partition"}.get(kind, name)
    if path.endswith(".png"):
        return report(path, caption=f"../report/{caption}.rst", category="Figures", subcategory=kind)
    return path
