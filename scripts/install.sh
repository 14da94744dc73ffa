#!/usr/bin/env bash
# Set up cezsar in ./.venv (docs/deployment.md has every install route, Jetson's included).
#
#   bash scripts/install.sh                      # CPU torch (default): train, export, quantize, edge
#   CEZSAR_TORCH=cuda bash scripts/install.sh    # torch 2.13.0 from PyPI: the CUDA build on Linux x86_64
#   CEZSAR_TORCH=none bash scripts/install.sh    # no torch: edge runtime only (onnxruntime, + tensorrt extras)
#
# Why torch is installed first: `pip install torch==2.13.0` takes whatever 2.13.0 build the indexes
# offer. PyPI's Linux x86_64 wheel is the CUDA build (with GBs of nvidia-* wheels); the CPU build is
# "2.13.0+cpu", on PyTorch's CPU index. pip prefers 2.13.0+cpu over 2.13.0 when both are offered, so
# the CPU route adds that index. On this project's dev machines a local wheel folder already holds
# torch 2.13.0+cpu (PyTorch's own index is not reachable there), and that wheel is used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${CEZSAR_TORCH:-cpu}
CPU_INDEX=https://download.pytorch.org/whl/cpu

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip)
"${PIP[@]}" install -q --upgrade pip

case "$TORCH" in
  cpu)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if "${PIP[@]}" download -q --no-deps --no-index -d "$tmp" torch==2.13.0 >/dev/null 2>&1 \
      && compgen -G "$tmp/torch-2.13.0+cpu*.whl" >/dev/null; then
      echo "torch: the local torch 2.13.0+cpu wheel (pip's find-links)"
      "${PIP[@]}" install -q torch==2.13.0
    else
      echo "torch: 2.13.0+cpu from PyTorch's CPU index ($CPU_INDEX)"
      "${PIP[@]}" install -q torch==2.13.0 --extra-index-url "$CPU_INDEX"
    fi
    EXTRAS="opencv,train,edge,history,quant,dev"
    ;;
  cuda)
    echo "torch: 2.13.0 from PyPI (the CUDA build on Linux x86_64)"
    "${PIP[@]}" install -q torch==2.13.0
    EXTRAS="opencv,train,edge,history,quant,dev"
    ;;
  none)
    echo "torch: not installed (edge runtime only)"
    EXTRAS="opencv,edge,history,dev"
    ;;
  *)
    echo "CEZSAR_TORCH=$TORCH: choose cpu, cuda or none" >&2
    exit 2
    ;;
esac
"${PIP[@]}" install -q -e ".[$EXTRAS]"
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" 2>/dev/null || true
.venv/bin/python -c "from cezsar.opencv import describe; print(describe())"
echo "cezsar installed in $(pwd)/.venv with [$EXTRAS] (activate with: source .venv/bin/activate)"
