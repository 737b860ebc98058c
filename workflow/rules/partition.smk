# One client partition per (alpha, seed), shared by every run that needs it.


localrules:
    partition_config,


rule partition_config:
    output:
        f"{OUT}/partitions/{{alpha}}-s{{seed}}.yaml",
    params:
        config=lambda w: STUDY.partition_config(f"{w.alpha}-s{w.seed}"),
    run:
        write_yaml(output[0], params.config)


rule partition:
    input:
        config=ancient(f"{OUT}/partitions/{{alpha}}-s{{seed}}.yaml"),
    output:
        partition=f"{OUT}/partitions/{{alpha}}-s{{seed}}.bin",
        counts=f"{OUT}/partitions/{{alpha}}-s{{seed}}.counts.csv",
    log:
        f"{OUT}/logs/partition/{{alpha}}-s{{seed}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        **SLURM,
    shell:
        "{PYTHON} -m fedunet partition --config {input.config} --out {output.partition} --counts {output.counts}"
        " > {log} 2>&1"
