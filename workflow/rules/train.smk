# One federated training run per grid point, through the fedunet CLI.  A killed job
# resumes from its last checkpoint when rerun; a job whose config changed starts over.


localrules:
    run_config,


rule run_config:
    output:
        f"{OUT}/runs/{RUN}/run.yaml",
    params:
        config=lambda w: STUDY.run_config(key_of(w)),
    run:
        write_yaml(output[0], params.config)


rule train:
    input:
        # ancient: a fresh clone (where git sets every file time) must not retrain committed runs
        config=ancient(f"{OUT}/runs/{RUN}/run.yaml"),
        partition=ancient(f"{OUT}/partitions/{{alpha}}-s{{seed}}.bin"),
    output:
        # Only the summary, written atomically after everything else: an interrupted job leaves
        # no declared output behind, so rerunning the same command simply resumes it.
        # metrics.csv and clients.csv (written every round) sit beside it.
        summary=f"{OUT}/runs/{RUN}/summary.json",
    log:
        f"{OUT}/logs/train/{RUN}.log",
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        **GPU,
        **SLURM,
    shell:
        "{PYTHON} -m fedunet train --config {input.config} --out $(dirname {output.summary}) --resume --restart-stale"
        " --set partition.file={input.partition} --set runtime.threads={threads} > {log} 2>&1"
        " || {{ echo 'fedunet train failed; last lines of {log}:' >&2; tail -n 5 {log} >&2; exit 1; }}"
