#!/usr/bin/env bash
# Run every benchmark at its published size and record the results:
#   benchmarks/results/<device>-<date>.json (pytest-benchmark, with machine info and goal ratios)
#   benchmarks/results/profile-<device>-<date>.json (one round of our engine and of the reference
#                                           loop under torch.profiler, cut into phases)
#   benchmarks/results/README.md            (rendered: ratios first, absolute figures, the profile)
# Run it on an otherwise idle machine: the goals are ratios, but a busy core still skews them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
device=$(.venv/bin/python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-') if torch.cuda.is_available() else 'cpu')")
out="benchmarks/results/${device}-$(date -u +%Y%m%d-%H%M%S).json"
.venv/bin/python -m pytest benchmarks --bench-size full --benchmark-enable --benchmark-json "$out" -q "$@"
.venv/bin/python benchmarks/profile_engine.py --size full
.venv/bin/python benchmarks/render.py
echo "[bench] $out and benchmarks/results/README.md"
