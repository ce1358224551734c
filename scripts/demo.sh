#!/usr/bin/env bash
# Set up (if needed), then run the whole edge loop locally: a Mosquitto broker with
# repedge's configuration, a node serving the committed default model, the web
# dashboard, sample tweets published with mosquitto_pub, and the labels shown live.
# Ctrl-C stops everything; --once stops after the sample tweets.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEDGE_EXTRAS="${REPEDGE_EXTRAS:-test,dashboard}" bash scripts/setup.sh
. .venv/bin/activate

PORT="${REPEDGE_DEMO_PORT:-18830}"
DASHBOARD_PORT="${REPEDGE_DEMO_DASHBOARD_PORT:-8080}"
STATE="${REPEDGE_DEMO_STATE:-.demo}"
mkdir -p "$STATE"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

python -m broker start --port "$PORT" --data-dir "$STATE/broker" > "$STATE/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    mosquitto_pub -p "$PORT" -t repedge/demo/ping -n >/dev/null 2>&1 && break
    sleep 0.1
done

# `python -m node` rather than `node`: inside a venv `node` may be Node.js (see README).
python -m node start --model models/default --broker "mqtt://localhost:$PORT" \
    --node-id demo --state-dir "$STATE/node" > "$STATE/node.log" 2>&1 &
pids+=($!)

python -m dashboard serve --broker "mqtt://localhost:$PORT" --port "$DASHBOARD_PORT" \
    > "$STATE/dashboard.log" 2>&1 &
pids+=($!)
echo "dashboard: http://127.0.0.1:$DASHBOARD_PORT/ (live; log: $STATE/dashboard.log)"

echo "labels (repedge/labels), Ctrl-C to stop:"
mosquitto_sub -p "$PORT" -t repedge/labels -t repedge/errors -v &
pids+=($!)
sleep 3

while IFS= read -r tweet; do
    [ -n "$tweet" ] && mosquitto_pub -p "$PORT" -q 1 -t repedge/tweets -m "$tweet"
    sleep 0.3
done < scripts/demo_tweets.txt
echo "(published $(grep -c . scripts/demo_tweets.txt) tweets; node log: $STATE/node.log;" \
    "telemetry: mosquitto_sub -p $PORT -t 'repedge/nodes/#' -v)"
if [ "${1:-}" = "--once" ]; then sleep 3; exit 0; fi
wait
