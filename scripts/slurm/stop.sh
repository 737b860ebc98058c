#!/usr/bin/env bash
# Stop the daemons that start.sh started (and only those): the PIDs it recorded, each
# checked to still run the expected program before it is signalled.
set -uo pipefail
STATE="${FEDUNET_SLURM_STATE:-/var/lib/fedunet-slurm}"
[ -f "$STATE/pids" ] || { echo "[slurm] nothing to stop" >&2; exit 0; }
ids="$(timeout 10 squeue -h -o %i 2>/dev/null || true)"
[ -n "$ids" ] && timeout 10 scancel $ids 2>/dev/null
tac "$STATE/pids" | while read -r name pid; do
  exe="$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)"
  want="$(readlink -f "$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$name")")"
  if [ -n "$exe" ] && [ "$exe" = "$want" ]; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    echo "[slurm] stopped $name ($pid)" >&2
  fi
done
rm -f "$STATE/pids"
