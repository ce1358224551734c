#!/usr/bin/env bash
# Set up (if needed) and run the whole default test suite plus the linters.
# The tests start their own Mosquitto on free ports; nothing else needs to run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest -q "$@"
