# One federated training run per grid point, through the fedunet CLI.  The run's whole config is
# a param, written to run.yaml: changing it reruns the job where snakemake recorded it, while file
# times never do, so a fresh clone does not retrain committed runs; there, a finished run whose
# run.yaml differs from its config now stops the workflow (common.smk, STALE).  A killed job resumes
# from its last checkpoint when rerun (the CLI discards a checkpoint of another config).


rule train:
    input:
        # ancient: git sets file times in arbitrary order on checkout; a partition with other
        # settings has another name (see partition.smk), so nothing stale is ever reused
        partition=lambda w: ancient(partition_of(w)),
    output:
        # Only the summary, written atomically after everything else: an interrupted job leaves
        # no declared output behind, so rerunning the same command simply resumes it.
        # run.yaml, metrics.csv and clients.csv (written every round) sit beside it.
        summary=f"{OUT}/runs/{RUN}/summary.json",
    params:
        config=run_config_yaml,
        run_dir=run_dir,
        python=python,
    log:
        f"{OUT}/logs/train/{RUN}.log",
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        **GPU,
        **SLURM,
    conda:
        ENV
    shell:
        "mkdir -p {params.run_dir} && echo {params.config:q} > {params.run_dir}/run.yaml && "
        "{params.python} -m fedunet train --config {params.run_dir}/run.yaml --out {params.run_dir} --resume --restart-stale"
        " --set partition.file={input.partition} --set runtime.threads={threads} > {log} 2>&1"
        " || {{ echo 'fedunet train failed; last lines of {log}:' >&2; tail -n 5 {log} >&2; exit 1; }}"
