#!/usr/bin/env bash
# Reproduce the demo model shipped in cezsar/assets/demo_model: the synthetic world (seed 0),
# the tiny backbone trained end to end with the symmetric InfoNCE loss as it was before issue 10 (one sampled
# negative per positive shared by the batch, identical captions masked: --share-negatives --fn-distance 0).
# The bundled model was trained that way; `cezsar train` defaults changed since (docs/ablation.md).
# About 3-4 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORLD=${WORLD:-/tmp/cezsar-world}
OUT=${OUT:-cezsar/assets/demo_model}
export HF_HUB_OFFLINE=1
.venv/bin/cezsar synth "$WORLD" --seed 0
.venv/bin/cezsar train --data "$WORLD" --out "$OUT" --seed 0 --loss infonce --share-negatives --fn-distance 0
.venv/bin/cezsar eval --model "$OUT" --data "$WORLD" --split "$WORLD/split.json" --confusion /tmp/demo_confusion.png --json
