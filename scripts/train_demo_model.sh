#!/usr/bin/env bash
# Reproduce the demo model shipped in cezsar/assets/demo_model: the synthetic world (seed 0), the
# tiny backbone trained end to end with `cezsar train`'s default recipe (docs/ablation.md: InfoNCE with
# in-batch + one automatic negative per positive, the per-token text head, cosine schedule, 30 epochs).
# About 3-5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORLD=${WORLD:-/tmp/cezsar-world}
OUT=${OUT:-cezsar/assets/demo_model}
export HF_HUB_OFFLINE=1
.venv/bin/cezsar synth "$WORLD" --seed 0
.venv/bin/cezsar train --data "$WORLD" --out "$OUT" --seed 0
.venv/bin/cezsar eval --model "$OUT" --data "$WORLD" --split "$WORLD/split.json" --confusion /tmp/demo_confusion.png --json
