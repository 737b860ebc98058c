# fedunet-bench: the FedUNet study as a grid of training jobs, aggregated into tables and figures.
#
#   snakemake --cores all                                   # the paper study (config/config.yaml)
#   snakemake --cores all --configfile config/quick.yaml    # Fashion-MNIST, ~25 min on 2 CPU cores
#   snakemake --profile workflow/profiles/slurm             # the same grid on a SLURM cluster
#   snakemake --report results/<study>/report.html          # HTML report of a finished study
from snakemake.utils import min_version, validate

min_version("8.0")

# A --configfile replaces the default study instead of being merged into it.
if not config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/partition.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        tables=TABLES,
        figures=FIGURES,
    default_target: True
