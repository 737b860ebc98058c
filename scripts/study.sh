#!/usr/bin/env bash
# Install everything, then make the quick study's tables and figures (Fashion-MNIST, config/quick.yaml).
#
#   bash scripts/study.sh            # regenerate tables + figures from the committed runs: seconds, no training
#   bash scripts/study.sh --retrain  # retrain every run from scratch into retrained/quick/ (under 30 minutes on 2 CPU cores),
#                                    # leaving the committed results/quick/ untouched
#
# Other arguments go to snakemake (e.g. --configfile config/smoke.yaml for the one-minute synthetic study).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
args=()
retrain=0
for a in "$@"; do
  if [ "$a" = --retrain ]; then retrain=1; else args+=("$a"); fi
done
[ ${#args[@]} -gt 0 ] || args=(--configfile config/quick.yaml)
[ "$retrain" = 0 ] || args+=(--config results=retrained)
start=$(date +%s)
.venv/bin/snakemake --cores all "${args[@]}"
where=results; [ "$retrain" = 0 ] || where=retrained
echo "[study] finished in $(( $(date +%s) - start )) s; tables in $where/*/tables, figures in $where/*/figures"
