# One client partition per (alpha, seed, settings digest), shared by every run that needs it.
# The digest of its settings is part of the name: changed settings make a new file, and the runs
# using it are rerun; file times never matter (git sets them arbitrarily on checkout).


rule partition:
    output:
        partition=f"{OUT}/partitions/{{alpha}}-s{{seed}}-{{digest}}.bin",
        counts=f"{OUT}/partitions/{{alpha}}-s{{seed}}-{{digest}}.counts.csv",
    params:
        config=partition_config_yaml,
        config_file=f"{OUT}/partitions/{{alpha}}-s{{seed}}-{{digest}}.yaml",
        python=python,
    log:
        f"{OUT}/logs/partition/{{alpha}}-s{{seed}}-{{digest}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
        **SLURM,
    conda:
        ENV
    shell:
        "echo {params.config:q} > {params.config_file} && "
        "{params.python} -m fedunet partition --config {params.config_file} --out {output.partition} --counts {output.counts}"
        " > {log} 2>&1"
