#!/usr/bin/env bash
# Set up cezsar in ./.venv on a fresh machine (CPU). torch is installed first and pinned to the
# CPU build, so that no other package pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[train,edge,quant,dev]'
echo "cezsar installed in $(pwd)/.venv (activate with: source .venv/bin/activate)"
