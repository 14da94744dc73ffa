#!/usr/bin/env bash
# Install cezsar into ./.venv and run the checks CI runs: ruff, mypy, the import layers, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/mypy cezsar training converter calibration edge
.venv/bin/lint-imports  # layers contract in pyproject.toml
.venv/bin/python -m pytest -q "$@"
