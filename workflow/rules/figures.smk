# Figures (PNG + PDF) from the aggregated tables.
FIGURES = [f"{OUT}/figures/{name}.{ext}" for name in STUDY.figure_names() for ext in ("png", "pdf")]


def figure_output(path):
    name = os.path.basename(path).rsplit(".", 1)[0]
    kind = name.split("_", 1)[0]
    caption = {"curves": "curves", "partition": "partition"}.get(kind, name)
    if path.endswith(".png"):
        return report(path, caption=f"../report/{caption}.rst", category="Figures", subcategory=kind)
    return path


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
        tables=f"{OUT}/tables",
        figures=f"{OUT}/figures",
        footer=f"fedunet-bench, study '{STUDY.name}': our results, not the paper's",
    log:
        f"{OUT}/logs/figures.log",
    script:
        "../scripts/figures.py"
