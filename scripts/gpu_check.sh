#!/usr/bin/env bash
# GPU check for an NVIDIA machine. Runs from the repository root; logs and JSON go to $OUT
# (default ./gpu-check-out). Ends with one verdict line per part:
#
#   VERDICT <part>: verified | not installed | not verified | failed  (detail)
#
# "verified" only when the part ran and passed; a part whose library is missing says "not installed",
# one that could not run says "not verified"; nothing missing ever reads as a pass. Exit status: 1 if a
# part failed, else 0.
#
#   bash scripts/gpu_check.sh                       # every part
#   PARTS=verify,tensorrt bash scripts/gpu_check.sh # some of: gpu, verify, tests, tensorrt, tower, stream
#
# Parts:
#   gpu       nvidia-smi and torch see a CUDA device
#   verify    scripts/gpu_verify.py (TensorRT runner buffer layers, torch-CUDA runner vs CPU fp32)
#   tests     the pytest tests marked gpu but not tensorrt
#   tensorrt  the pytest tests marked tensorrt: real engine builds (fp16, int8 from Q/DQ), $TRT_TIMEOUT s
#   tower     scripts/bench_tower.py: resnet18 (torch CUDA fp32 vs fp16+graphs, TensorRT if installed)
#             and resnet50 at 224 px (frames/s)
#   stream    scripts/bench_stream.py with the torch-cuda backend (needs pyzmq)
# Carried wheels in .whl/ are installed first (into /tmp/site, never over the machine's packages).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu-check-out}"
PARTS="${PARTS:-gpu,verify,tests,tensorrt,tower,stream}"
TRT_TIMEOUT="${TRT_TIMEOUT:-480}"   # engine builds: a few minutes each on a cold timing cache
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
VERDICTS=()
FAILED=0
log() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/gpu_check.log"; }
verdict() {  # part status detail
  VERDICTS+=("VERDICT $1: $2 ($3)")
  [ "$2" = failed ] && FAILED=1
  log "VERDICT $1: $2 ($3)"
}
want() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# "N passed" from a pytest log, 0 if none
passed() { grep -Eo '[0-9]+ passed' "$1" | tail -n 1 | grep -Eo '[0-9]+' || echo 0; }

if compgen -G ".whl/*.whl" >/dev/null; then
  log "installing carried wheels: $(cd .whl && echo ./*.whl)"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    log "wheel install failed"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import importlib
for m in ("torch", "onnxruntime", "cv2", "zmq", "tensorrt", "cuda.bindings", "timm", "torchvision"):
    try:
        mod = importlib.import_module(m)
        print(f"{m}: {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: missing ({type(e).__name__})")
EOF
HAVE_TRT=0; "$PY" -c "import tensorrt, sys; sys.exit(0 if hasattr(tensorrt, 'Builder') else 1)" 2>/dev/null && HAVE_TRT=1
HAVE_ZMQ=0; "$PY" -c "import zmq" 2>/dev/null && HAVE_ZMQ=1
HAVE_CUDA=0; "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_CUDA=1

if want gpu; then
  smi=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)
  if [ "$HAVE_CUDA" = 1 ]; then
    verdict gpu verified "$smi"
  elif command -v nvidia-smi >/dev/null; then
    verdict gpu failed "nvidia-smi: $smi, but torch sees no CUDA device"
  else
    verdict gpu "not installed" "no NVIDIA driver (nvidia-smi not found)"
  fi
fi

if want verify; then
  log "gpu_verify.py"
  timeout 300 "$PY" scripts/gpu_verify.py --json "$OUT/gpu_verify.json" 2>&1 | tee "$OUT/gpu_verify.log"
  rc=$?
  last=$(tail -n 1 "$OUT/gpu_verify.log")
  case $rc in
    0) verdict verify verified "$last" ;;
    2) verdict verify "not verified" "$last" ;;
    124) verdict verify failed "timed out after 300 s" ;;
    *) verdict verify failed "exit $rc: $last" ;;
  esac
fi

if want tests; then
  log "pytest -m 'gpu and not tensorrt'"
  timeout 300 "$PY" -m pytest -q -rs -m "gpu and not tensorrt" tests -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest_gpu.log" | tail -n 15
  rc=$?
  n=$(passed "$OUT/pytest_gpu.log")
  if [ "$rc" = 5 ]; then verdict tests "not verified" "no test collected"
  elif [ "$rc" != 0 ]; then verdict tests failed "pytest exit $rc, see pytest_gpu.log"
  elif [ "$n" = 0 ]; then verdict tests "not verified" "every test skipped, see pytest_gpu.log"
  else verdict tests verified "$n passed"
  fi
fi

if want tensorrt; then
  if [ "$HAVE_TRT" = 0 ]; then
    verdict tensorrt "not installed" "tensorrt does not import (or is the PyPI placeholder): no engine built"
  else
    log "pytest -m tensorrt (engine builds, up to $TRT_TIMEOUT s)"
    timeout "$TRT_TIMEOUT" "$PY" -m pytest -q -rs -m tensorrt tests -p no:cacheprovider 2>&1 \
      | tee "$OUT/pytest_tensorrt.log" | tail -n 15
    rc=$?
    n=$(passed "$OUT/pytest_tensorrt.log")
    if [ "$rc" = 124 ]; then verdict tensorrt failed "timed out after $TRT_TIMEOUT s (raise TRT_TIMEOUT)"
    elif [ "$rc" != 0 ]; then verdict tensorrt failed "pytest exit $rc, see pytest_tensorrt.log"
    elif [ "$n" = 0 ]; then verdict tensorrt "not verified" "every test skipped, see pytest_tensorrt.log"
    else verdict tensorrt verified "$n passed"
    fi
  fi
fi

if want tower; then
  if [ "$HAVE_CUDA" = 0 ]; then
    verdict tower "not verified" "no CUDA device"
  else
    VARS="torch-cpu-fp32,torch-cuda-fp32,torch-cuda-fp16"
    INT8=()
    if [ "$HAVE_TRT" = 1 ]; then VARS="$VARS,tensorrt-fp16,tensorrt-int8"; INT8=(--int8-method ort); fi
    log "bench_tower resnet18 224 ($VARS)"
    if timeout 300 "$PY" scripts/bench_tower.py --json --backbone resnet18 --resolution 224 --batch 8 --gpu-batch 64 \
      --iters 30 --variants "$VARS" "${INT8[@]}" >"$OUT/tower_resnet18.json" 2>"$OUT/tower_resnet18.err" \
      && timeout 200 "$PY" scripts/bench_tower.py --json --backbone resnet50 --resolution 224 --gpu-batch 64 \
        --iters 30 --variants "torch-cuda-fp32,torch-cuda-fp16" >"$OUT/tower_resnet50.json" 2>"$OUT/tower_resnet50.err"
    then
      verdict tower verified "measured; figures in tower_resnet18.json, tower_resnet50.json"
    else
      verdict tower failed "$(tail -q -n 2 "$OUT"/tower_*.err 2>/dev/null | tr '\n' ' ')"
    fi
  fi
fi

if want stream; then
  if [ "$HAVE_ZMQ" = 0 ]; then
    verdict stream "not installed" "pyzmq missing (carry its wheel in .whl/)"
  elif [ "$HAVE_CUDA" = 0 ]; then
    verdict stream "not verified" "no CUDA device"
  else
    log "bench_stream torch-cuda"
    if timeout 200 "$PY" scripts/bench_stream.py --json --backend torch-cuda --frames 96 --soak 15 \
      >"$OUT/stream_cuda.json" 2>"$OUT/stream_cuda.err"; then
      verdict stream verified "measured; figures in stream_cuda.json"
    else
      verdict stream failed "$(tail -n 2 "$OUT/stream_cuda.err" | tr '\n' ' ')"
    fi
  fi
fi

printf '%s\n' "${VERDICTS[@]}" >"$OUT/verdicts.txt"
log "done in $(( $(date +%s) - T0 )) s; logs and JSON in $OUT"
printf '%s\n' "${VERDICTS[@]}"
exit "$FAILED"
