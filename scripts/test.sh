#!/usr/bin/env bash
# Install cezsar into ./.venv and run the checks CI runs: ruff, mypy, the import layers, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The MQTT tests run a real mosquitto broker; install it on a clean CI machine (root only, when missing).
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ] && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients) \
    || echo "warning: could not install mosquitto; the MQTT tests will be skipped" >&2
fi
# The web console's browser tests drive Debian's chromium through chromium-driver (root only, when missing).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    || echo "warning: could not install chromium; the console browser tests will be skipped" >&2
fi
# tests/test_packaging.py checks the systemd unit with systemd-analyze (Debian's systemd package; root only, when missing).
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd) \
    || echo "warning: could not install systemd; the unit checks will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/mypy cezsar training converter calibration edge
.venv/bin/lint-imports  # layers contract in pyproject.toml
.venv/bin/python -m pytest -q "$@"
