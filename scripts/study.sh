#!/usr/bin/env bash
# Install everything, then run the small real study: Fashion-MNIST, the paper's experiments
# scaled down (config/quick.yaml), about 25 minutes on 2 CPU cores. Extra arguments go to
# snakemake (e.g. --configfile config/smoke.yaml for the one-minute synthetic study).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--configfile config/quick.yaml)
start=$(date +%s)
.venv/bin/snakemake --cores all "${args[@]}"
echo "[study] finished in $(( $(date +%s) - start )) s; tables in results/*/tables, figures in results/*/figures"
