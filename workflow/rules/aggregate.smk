# Costs of each backbone, then every finished run aggregated into the study's tables.
TABLE_NAMES = ["accuracy", "communication", "compute", "paper_vs_ours"]
if "heterogeneous" in config["experiments"]:
    TABLE_NAMES.append("methods")
TABLES = [f"{OUT}/tables/{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "md")]
TABLES += [f"{OUT}/tables/{name}" for name in ("runs.csv", "curves.csv", "per_architecture.csv", "provenance.json")]
FIRST_RUN = sorted(STUDY.runs)[0]
STUDY_ARCHS = sorted({a for s in {k.archset for k in STUDY.runs} for a in config["architecture_sets"][s]})
STUDY_D = sorted({k.d for k in STUDY.runs} | {128, 1024})
CONFIG_FILES = [os.path.relpath(p) for p in workflow.overwrite_configfiles] or ["config/config.yaml"]


rule costs:
    input:
        # after training, so that the throughput measurement has the machine to itself
        runs=[ancient(s) for s in SUMMARIES],
    output:
        f"{OUT}/tables/costs.json",
    params:
        archs=" ".join(STUDY_ARCHS),
        sizes=" ".join(map(str, STUDY_D)),
        d=config["defaults"]["d"][0],
        measure="--measure" if config["compute"]["measure"] else "",
        device=config["compute"]["device"],
    log:
        f"{OUT}/logs/costs.log",
    threads: TRAIN["threads"]  # as many as a training job, so both measurements compare
    resources:
        mem_mb=4000,
        runtime=30,
        **(GPU if config["compute"]["device"].startswith("cuda") else {}),
        **SLURM,
    shell:
        "{PYTHON} -m fedunet info --config {OUT}/runs/{FIRST_RUN.path}/run.yaml --d {params.d} --architectures {params.archs} --sizes {params.sizes}"
        " {params.measure} --device {params.device} --threads {threads} --json {output} > {log} 2>&1"


localrules:
    aggregate,


rule aggregate:
    input:
        summaries=SUMMARIES,  # metrics.csv and clients.csv are complete once these exist
        costs=f"{OUT}/tables/costs.json",
    output:
        [report(t, caption="../report/table.rst", category="Tables") if t.endswith(".md") else t for t in TABLES],
    params:
        runs=STUDY.run_table(),
        runs_dir=f"{OUT}/runs",
        tables=f"{OUT}/tables",
        study={"name": STUDY.name, "config_files": CONFIG_FILES, "defaults": config["defaults"]},
    log:
        f"{OUT}/logs/aggregate.log",
    script:
        "../scripts/aggregate.py"
