# Costs of each backbone, then every finished run aggregated into the study's tables.


rule costs:
    input:
        # after training, so that the throughput measurement has the machine to itself; the
        # classification runs only (their backbones are what it measures): a segmentation experiment
        # added to a study does not remeasure them
        runs=[ancient(s) for s in CLASSIFICATION_SUMMARIES],
    output:
        f"{OUT}/tables/costs.json",
    params:
        archs=" ".join(STUDY_ARCHS),
        sizes=" ".join(map(str, STUDY_D)),
        d=config["defaults"]["d"][0],
        measure="--measure" if config["compute"]["measure"] else "",
        device=config["compute"]["device"],
        run_config=first_run_config,
        python=python,
    log:
        f"{OUT}/logs/costs.log",
    threads: TRAIN["threads"]  # as many as a training job, so both measurements compare
    resources:
        mem_mb=4000,
        runtime=30,
        **(GPU if config["compute"]["device"].startswith("cuda") else {}),
        **SLURM,
    conda:
        ENV
    shell:
        "{params.python} -m fedunet info --config {params.run_config} --d {params.d} --architectures {params.archs}"
        " --sizes {params.sizes} {params.measure} --device {params.device} --threads {threads} --json {output} > {log} 2>&1"


localrules:
    aggregate,


rule aggregate:
    input:
        summaries=SUMMARIES,  # metrics.csv and clients.csv are complete once these exist
        costs=COSTS,  # none in a study of segmentation runs only
    output:
        [table_output(t) for t in TABLES],
    params:
        runs=STUDY.run_table(),
        tables=tables_dir,
        study={
            "name": STUDY.name,
            "config_files": CONFIG_FILES,
            "defaults": config["defaults"],
            "planned_runs": STUDY.planned_by_task,
            "planned_by_experiment": STUDY.planned_by_experiment,
            "questions": {e: spec.get("description", "") for e, spec in config["experiments"].items()},
        },
    log:
        f"{OUT}/logs/aggregate.log",
    conda:
        ENV
    script:
        "../scripts/aggregate.py"
