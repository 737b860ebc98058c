#!/usr/bin/env bash
# Produce a long study incrementally, one experiment after another, so that whatever a stopped
# session leaves behind is a set of finished experiments, not a scatter of cells:
#   setsid nohup bash scripts/study-in-order.sh config/fmnist.yaml readings homogeneous ... &
# An experiment named NAME:METHOD,METHOD trains only those methods' runs of it (the comparison that
# matters first; name the experiment again later for the rest), e.g. readings:fedunet,local readings.
# Each experiment's training runs are snakemake targets (finished runs are never retrained; an
# interrupted run resumes from its checkpoint). With no experiment named, every experiment of the
# config runs in its own order. Tables and figures are made at the end; at any time before, those of
# the runs finished so far come from
#   snakemake --cores all --configfile CONFIG --config finished_only=True
# Log: results/<study>/logs/in-order.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config="$1"; shift
PY=.venv/bin/python
SMK="${SMK:-.venv/bin/snakemake}"  # (tests put a stand-in here)
experiments=("$@")
if [ ${#experiments[@]} -eq 0 ]; then
  mapfile -t experiments < <($PY -c "import sys, yaml; print('\n'.join(yaml.safe_load(open(sys.argv[1]))['experiments']))" "$config")
fi
study=$($PY -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['study'])" "$config")
mkdir -p "results/$study/logs"
log="results/$study/logs/in-order.log"
# every experiment's summary files (snakemake targets), one file each, from one Study: every name
# (NAME or NAME:METHOD,METHOD) is checked before any training, and a bad one stops here
lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT
$PY - "$config" "$lists" "${experiments[@]}" <<'PY'
import sys
from pathlib import Path

import yaml

from fedunet.study import Study, StudyError

config, out, specs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
try:
    study = Study(yaml.safe_load(open(config)))
    targets = [study.summaries_of(spec) for spec in specs]
except StudyError as e:
    sys.exit(str(e))
for i, summaries in enumerate(targets):
    (out / str(i)).write_text("".join(f"{s}\n" for s in summaries))
PY
# A snakemake killed hard (a session's end, kill -9) leaves its lock behind, and every later snakemake
# here refuses the runs it names ("Directory cannot be locked"). With no snakemake alive in this
# directory the lock is stale and is lifted; with one alive, stop: two at once would train the same
# runs twice. (Processes are seen on this machine only: do not run two from machines sharing a disk.)
here=$(pwd -P)
for proc in /proc/[0-9]*; do
  [ "$(readlink "$proc/cwd" 2>/dev/null)" = "$here" ] || continue
  argv=(); mapfile -d '' -t argv < "$proc/cmdline" 2>/dev/null || continue
  for arg in "${argv[@]:0:3}"; do
    if [ "${arg##*/}" = snakemake ]; then
      echo "a snakemake is already running in $here (pid ${proc#/proc/}): let it finish or stop it first" >&2
      exit 1
    fi
  done
done
"$SMK" --unlock --configfile "$config" >> "$log" 2>&1
for i in "${!experiments[@]}"; do
  exp="${experiments[$i]}"
  mapfile -t targets < "$lists/$i"
  echo "[$(date -u +%FT%TZ)] experiment $exp: ${#targets[@]} runs" | tee -a "$log"
  "$SMK" --cores all --configfile "$config" --keep-going --rerun-incomplete "${targets[@]}" >> "$log" 2>&1 \
    || echo "[$(date -u +%FT%TZ)] experiment $exp: some runs failed (see $log)" | tee -a "$log"
done
echo "[$(date -u +%FT%TZ)] all runs done; tables and figures" | tee -a "$log"
"$SMK" --cores all --configfile "$config" --keep-going >> "$log" 2>&1
echo "[$(date -u +%FT%TZ)] finished" | tee -a "$log"
