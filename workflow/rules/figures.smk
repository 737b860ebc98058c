# Figures (PNG + PDF) from the aggregated tables.


localrules:
    figures,


rule figures:
    input:
        # the classification tables (none in a study of segmentation runs only)
        runs=[f"{OUT}/tables/runs.csv"] if CLASSIFICATION else [],
        curves=[f"{OUT}/tables/curves.csv"] if CLASSIFICATION else [],
        per_architecture=[f"{OUT}/tables/per_architecture.csv"] if CLASSIFICATION else [],
        counts=PARTITION_COUNTS,
        segmentation=SEGMENTATION_TABLES,
        # examples.npz sits beside each summary (written before it): the segmentation figure's canvases
        segmentation_runs=[ancient(s) for s in SEGMENTATION_SUMMARIES],
    output:
        [figure_output(f) for f in FIGURES],
    params:
        footer=f"fedunet-bench, study '{STUDY.name}': our results, not the paper's" + SO_FAR,
        tables=tables_dir,
    log:
        f"{OUT}/logs/figures.log",
    conda:
        ENV
    script:
        "../scripts/figures.py"
