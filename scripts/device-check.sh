#!/usr/bin/env bash
# One prepared check for the first machine with a GPU (under 9 minutes on one GPU, install included):
#   1. install (bash scripts/install.sh; an existing .venv is kept when the machine is offline)
#   2. the CUDA-marked tests (pytest -m cuda: deterministic CUDA runs bit-identical and free of
#      nondeterministic ops, no host sync per step, inductor compile without fallback)
#   3. the paper's setting at full width (10 clients, VGG11/13/16/19, d=1024 and d=128, CIFAR-10
#      if on disk else synthetic 3x32x32), 3 rounds each: round time, images/s, peak memory, and
#      the estimator's prediction for the same runs (benchmarks/paper_setting.py)
#   4. the benchmark suite on the device (engine vs reference loop, engine vs bare loop,
#      serialization from device memory), pytest-benchmark JSON as scripts/bench.sh writes it
#   5. one client's epoch under each runtime switch: deterministic off, fp32, NCHW, compile, no U-Net
#      (benchmarks/step_variants.py: which knob a slow step answers to)
#   6. if time is left: fedunet estimate config/config.yaml --measure (the paper study's GPU-hours)
#   then benchmarks/render.py puts everything into benchmarks/results/README.md next to the CPU results.
# Every result is JSON under benchmarks/results/ with the device named; the stage log and timings
# are in device-check-<device>-<stamp>.json, each stage's output in device-check-logs/<device>-<stamp>/.
#
#   bash scripts/device-check.sh                  # on the GPU machine; commit benchmarks/results/ afterwards
#   bash scripts/device-check.sh --dry            # CI: tiny sizes on CPU, into a temporary folder (cannot rot)
#   bash scripts/device-check.sh --skip-install   # the .venv is already there
#   bash scripts/device-check.sh --python "$(command -v python3)"   # an offline GPU machine whose python3
#       already has torch (a cluster module, a vendor image): installs nothing, imports fedunet from this
#       checkout; a missing pure-Python dependency (jsonschema) goes on PYTHONPATH beforehand
# Options: --out DIR (default benchmarks/results; --dry: a temporary folder), --budget SECONDS (540),
#          --python PATH (use this interpreter instead of .venv; implies --skip-install),
#          --only STAGE,STAGE (rerun just these after a fix: cuda-tests, paper-setting, benchmarks, step-variants, estimate;
#          the others are recorded as skipped).
# Provenance: without a .git folder (a copied checkout), set FEDUNET_GIT_COMMIT to the commit copied.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=0
install=1
out=""
budget=540
python=""
only=""
STAGES="install cuda-tests paper-setting benchmarks step-variants estimate"

while [ $# -gt 0 ]; do
  case "$1" in
    --dry) dry=1 ;;
    --skip-install) install=0 ;;
    --out) out="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --python) python="$2"; install=0; shift ;;
    --only) only="$2"; shift
      for name in ${only//,/ }; do
        [[ " $STAGES " == *" $name "* ]] || { echo "device-check: --only: unknown stage $name (allowed: ${STAGES// /, })" >&2; exit 2; }
      done ;;
    *) echo "device-check: unknown option $1 (allowed: --dry --skip-install --out DIR --budget SECONDS --python PATH --only STAGES)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$out" ]; then
  if [ "$dry" = 1 ]; then out=$(mktemp -d -t fedunet-device-check-XXXXXX); else out=benchmarks/results; fi
fi
mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)
logs="$out/device-check-logs/$stamp"  # renamed <device>-<stamp> at the end: one folder per run
mkdir -p "$logs"
: > "$logs/stages.jsonl"
PY=.venv/bin/python
if [ -n "$python" ]; then
  PY="$python"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # fedunet from this checkout, not an installed copy
  "$PY" -c "import torch, fedunet" || { echo "device-check: --python $python cannot import torch and fedunet (see above)" >&2; exit 1; }
fi
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( budget - $(elapsed) )); }

# skipped NAME REASON: say so and record the stage as skipped
skipped() {
  echo "[device-check] $1: skipped ($2)"
  echo "{\"stage\": \"$1\", \"rc\": null, \"seconds\": 0, \"limit_s\": 0, \"skipped\": true}" >> "$logs/stages.jsonl"
}

# stage NAME LIMIT_SECONDS COMMAND...: run it under a time limit, log it, record name/rc/seconds
stage() {
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then
    skipped "$name" "not in --only $only"; return 0
  fi
  if [ "$limit" -le 0 ]; then
    skipped "$name" "no time left of the ${budget}s budget"; return 0
  fi
  echo "[device-check] $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit, \"skipped\": false}" >> "$logs/stages.jsonl"
  echo "[device-check] $name: rc $rc in $(( $(date +%s) - t0 ))s"
  return 0
}

# 1. install
if [ "$install" = 1 ] && [ "$dry" = 0 ]; then
  stage install 240 bash scripts/install.sh
  if ! "$PY" -c "import torch, fedunet" 2>/dev/null; then
    echo "[device-check] no working .venv after install; stopping" >&2
    exit 1
  fi
fi
[ -x "$PY" ] || { echo "device-check: $PY missing; run bash scripts/install.sh first (or pass --python PATH)" >&2; exit 1; }

if [ "$dry" = 1 ]; then
  device=cpu
  label=cpu-dry
else
  device=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  label=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-') if torch.cuda.is_available() else 'cpu')")
  [ "$device" = cuda ] || echo "[device-check] WARNING: no CUDA device; running the full sizes on CPU (slow); use --dry for a quick check" >&2
fi
echo "[device-check] device $label, results into $out"
"$PY" -c "import torch; print('[device-check] torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# 2. CUDA-marked tests (skipped, quickly, without a GPU)
stage cuda-tests $(( $(left) < 240 ? $(left) : 240 )) \
  "$PY" -m pytest -q -m cuda tests/test_runtime.py -p no:cacheprovider --junitxml "$logs/cuda-tests.xml"

# 3. the paper's setting at full width (--dry: tiny)
paper_args=(--out "$out" --device "$device")
[ "$dry" = 1 ] && paper_args+=(--dry)
stage paper-setting $(( $(left) < 150 ? $(left) : 150 )) "$PY" benchmarks/paper_setting.py "${paper_args[@]}"

# 4. the benchmark suite on the device
bench_json="$out/${label}-${stamp}.json"
if [ "$dry" = 1 ]; then  # the device-bound benchmarks only (CI runs the whole suite in its fast mode anyway)
  bench_args=(--bench-size small --bench-device cpu --benchmark-disable
    -k "engine_round or engine_throughput or from_device_memory or aggregate_the_same")
else
  # each benchmark timed for at most 0.25 s (the engine ones run fixed rounds); the accuracy-parity check
  # (3 seeds x 5 rounds of the CPU-bound reference loop) is device-independent and measured on CPU
  bench_args=(--bench-size full --bench-device "$device" --benchmark-enable --benchmark-json "$bench_json"
    --benchmark-max-time 0.25 --benchmark-min-rounds 3 -k "not reach_the_same_accuracy")
fi
[ "$dry" = 1 ] && export FEDUNET_BENCH_THREADS=1
stage benchmarks $(( $(left) - 190 )) "$PY" -m pytest benchmarks -q -p no:cacheprovider "${bench_args[@]}"

# 5. one step under each runtime switch (deterministic, bf16, channels_last, compile, no U-Net)
step_args=(--out "$out" --device "$device")
[ "$dry" = 1 ] && step_args+=(--dry)
stage step-variants $(( $(left) - 60 < 260 ? $(left) - 60 : 260 )) "$PY" benchmarks/step_variants.py "${step_args[@]}"

# 6. the paper study's cost on this device, if time is left (a minute or more)
if [ "$dry" = 1 ]; then  # measuring is exercised by the paper-setting stage; here the study pricing
  stage estimate $(( $(left) < 120 ? $(left) : 120 )) "$PY" -m fedunet estimate config/smoke.yaml --tflops 0.05 \
    --json "$out/estimate-${label}-${stamp}.json"
else
  # measure the models carrying the most FLOPs for what is left of the budget, the rest priced by FLOPs
  stage estimate $(( $(left) - 10 )) "$PY" -m fedunet estimate config/config.yaml --measure --device "$device" --steps 3 \
    --min-seconds 0.2 --measure-budget $(( $(left) - 60 > 20 ? $(left) - 60 : 20 )) --json "$out/estimate-${label}-${stamp}.json"
fi

# the stage log (with the CUDA tests' outcomes), then the rendered README (--dry: in its own folder)
summary="$out/device-check-${label}-${stamp}.json"
"$PY" - "$logs" "$summary" "$label" "$dry" "$budget" "$(elapsed)" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

import torch

from fedunet import provenance

logs, summary, label, dry, budget, total = sys.argv[1:]
stages = [json.loads(line) for line in Path(logs, "stages.jsonl").read_text().splitlines() if line.strip()]
tests = []
junit = Path(logs, "cuda-tests.xml")
if junit.exists():
    for case in ET.parse(junit).iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            if case.find(kind) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
report = {
    "kind": "device-check",
    "dry": dry == "1",
    "device_label": label,
    "device": provenance.device_description(torch.device("cuda" if torch.cuda.is_available() and dry != "1" else "cpu")),
    "budget_s": int(budget),
    "total_s": int(total),
    "stages": stages,
    "cuda_tests": tests,
    "provenance": {"git": provenance.git_state(), "packages": provenance.package_versions(), "date": provenance.utc_now()},
}
Path(summary).write_text(json.dumps(report, indent=1) + "\n")
PYEOF
mv "$logs" "$out/device-check-logs/${label}-${stamp}" && logs="$out/device-check-logs/${label}-${stamp}"
"$PY" benchmarks/render.py --results "$out" >/dev/null && echo "[device-check] rendered $out/README.md"
echo "[device-check] done in $(elapsed)s (budget ${budget}s): $summary"
failed=$(grep -o '"rc": [1-9][0-9]*' "$summary" | wc -l)
[ "$failed" = 0 ] || { echo "[device-check] $failed stage(s) failed: see $logs/*.log" >&2; exit 1; }
