# Figures (PNG + PDF) from the aggregated tables.


localrules:
    figures,


rule figures:
    input:
        runs=f"{OUT}/tables/runs.csv",
        curves=f"{OUT}/tables/curves.csv",
        per_architecture=f"{OUT}/tables/per_architecture.csv",
        counts=PARTITION_COUNTS,
    output:
        [figure_output(f) for f in FIGURES],
    params:
        footer=f"fedunet-bench, study '{STUDY.name}': our results, not the paper's",
    log:
        f"{OUT}/logs/figures.log",
    conda:
        ENV
    script:
        "../scripts/figures.py"
