#!/usr/bin/env bash
# Install cezsar into ./.venv and run the checks CI runs: ruff, mypy, the import layers, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

# need COMMAND "DEBIAN PACKAGES" "what is skipped without them": the integration tests use the real
# programs, started by the tests on loopback ports; a clean CI machine gets them from apt (root only).
updated=""
need() {
  if command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ "$(id -u)" != 0 ]; then
    return
  fi
  [ -n "$updated" ] || { apt-get update -qq && updated=1; } || true
  # shellcheck disable=SC2086 - the package list is meant to split
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $2 \
    || echo "warning: could not install $2; $3 will be skipped" >&2
}
need mosquitto "mosquitto mosquitto-clients" "the MQTT tests"
need chromium "chromium chromium-driver" "the console browser tests"
need systemd-analyze "systemd" "the systemd unit checks (tests/test_packaging.py)"
need prometheus "prometheus" "the Prometheus scrape and promtool checks"
need pg_ctlcluster "postgresql" "the PostgreSQL history tests (tests/test_history_pg.py, test_history_faults.py)"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/mypy cezsar training converter calibration edge
.venv/bin/lint-imports  # layers contract in pyproject.toml
.venv/bin/python -m pytest -q "$@"
