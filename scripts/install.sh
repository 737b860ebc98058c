#!/usr/bin/env bash
# Install everything fedunet-bench needs into ./.venv (idempotent, safe to rerun).
#   - Debian's dataset-fashion-mnist (real data offline) when apt is there and we are root
#   - a virtual environment with torch/torchvision pinned, then the package with its
#     workflow and test extras
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default .venv),
#              FEDUNET_SKIP_APT=1 to skip apt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

if [ "${FEDUNET_SKIP_APT:-0}" != 1 ] && [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "[install] not root: skipping apt-get install dataset-fashion-mnist (Fashion-MNIST will be downloaded instead)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] pip install $TORCH_PINS"
  "${PIP[@]}" $TORCH_PINS
fi
echo "[install] pip install -e .[workflow,test]"
"${PIP[@]}" -e ".[workflow,test]"
"$VENV/bin/python" -c "import torch, fedunet; print('[install] ok: torch', torch.__version__, '| fedunet', fedunet.__version__)"
