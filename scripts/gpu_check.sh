#!/usr/bin/env bash
# GPU check for a lent NVIDIA machine (H100/H200, bare image: torch with CUDA, onnxruntime CPU,
# opencv, sentence-transformers, typer; no tensorrt, no pyzmq). Runs from the repository root:
#
#   bash scripts/gpu_check.sh            # JSON and logs go to $OUT (or ./gpu-check-out)
#
# 1. installs carried wheels from .whl/ (pyzmq at least; tensorrt only if carried; see
#    /work/.library/device/README.md for how to download them on the dev box);
# 2. runs the GPU-marked tests;
# 3. bench_tower.py: resnet18 224 (torch CUDA FP32 eager vs FP16 with CUDA graphs + channels-last
#    at batch 64, TensorRT FP16/INT8 when tensorrt imports) and resnet50 224 (frames/s target);
# 4. bench_stream.py with the torch-cuda backend (needs pyzmq and the text model; skipped with
#    the reason otherwise);
# 5. prints a summary table of every ratio.
# Budget: under 5 minutes; each step has its own timeout so one hang cannot eat the lease.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/gpu_check.log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  log "installing carried wheels: $(ls .whl | tr '\n' ' ')"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" || log "wheel install failed"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/gpu_check.log"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import importlib
for m in ("torch", "onnxruntime", "cv2", "zmq", "tensorrt", "timm", "torchvision", "sentence_transformers"):
    try:
        mod = importlib.import_module(m)
        print(f"{m}: {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: missing ({type(e).__name__})")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF
HAVE_TRT=0; "$PY" -c "import tensorrt" 2>/dev/null && HAVE_TRT=1
HAVE_ZMQ=0; "$PY" -c "import zmq" 2>/dev/null && HAVE_ZMQ=1

log "GPU-marked tests"
timeout 90 "$PY" -m pytest -q -m "gpu or tensorrt" tests -p no:cacheprovider -x 2>&1 | tail -n 15 | tee "$OUT/pytest_gpu.log"

VARS="torch-cpu-fp32,torch-cuda-fp32,torch-cuda-fp16"
INT8=""
if [ "$HAVE_TRT" = 1 ]; then VARS="$VARS,tensorrt-fp16,tensorrt-int8"; INT8="--int8-method ort"; fi
log "bench_tower resnet18 224 ($VARS)"
timeout 100 "$PY" scripts/bench_tower.py --json --backbone resnet18 --resolution 224 --batch 8 --gpu-batch 64 \
  --iters 30 --variants "$VARS" $INT8 >"$OUT/tower_resnet18.json" 2>"$OUT/tower_resnet18.err" \
  || log "bench_tower resnet18 failed: $(tail -n 3 "$OUT/tower_resnet18.err")"
log "bench_tower resnet50 224 (frames/s target)"
timeout 80 "$PY" scripts/bench_tower.py --json --backbone resnet50 --resolution 224 --gpu-batch 64 --iters 30 \
  --variants "torch-cuda-fp32,torch-cuda-fp16" >"$OUT/tower_resnet50.json" 2>"$OUT/tower_resnet50.err" \
  || log "bench_tower resnet50 failed: $(tail -n 3 "$OUT/tower_resnet50.err")"

if [ "$HAVE_ZMQ" = 1 ]; then
  log "bench_stream torch-cuda"
  timeout 100 "$PY" scripts/bench_stream.py --json --backend torch-cuda --frames 96 --soak 15 \
    >"$OUT/stream_cuda.json" 2>"$OUT/stream_cuda.err" \
    || log "bench_stream failed: $(tail -n 3 "$OUT/stream_cuda.err")"
else
  log "bench_stream skipped: pyzmq is not installed (carry its wheel in .whl/)"
fi

"$PY" - "$OUT" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for f in sorted(out.glob("*.json")):
    try:
        d = json.loads(f.read_text())
    except ValueError:
        rows.append((f.name, "-", "no JSON (see .err)", "-"))
        continue
    gpu = d.get("machine", {}).get("gpu")
    for k, t in d.get("targets", {}).items():
        rows.append((f.name, k, f"{t['value']} (target {t['target']})", "holds" if t["holds"] else "MISSES"))
    for v, r in d.get("variants", {}).items():
        fe = r["frame_encoder"]
        rows.append((f.name, v, f"{fe['per_s']:.0f} frames/s at batch {r['batch']}, median {fe['median_ms']} ms", gpu))
    for r in d.get("runs", []):
        rows.append((f.name, f"{r['streams']} streams cache {'on' if r['cache'] else 'off'}",
                     f"{r['frames_per_s_total']} frames/s, latency p50 {r['latency_ms']['median']} ms", gpu))
w = [max(len(str(r[i])) for r in rows) if rows else 4 for i in range(4)]
for r in rows:
    print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
EOF
log "done in $(( $(date +%s) - T0 )) s; JSON in $OUT"
