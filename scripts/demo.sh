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
# Real history for the dashboard's first screen: a brand's RepLab 2013 tweets, replayed in
# their own time order with created_at (`node replay`). The labelled data is not shipped:
# without the file the demo runs without it. REPEDGE_DEMO_REPLAY= (empty) turns it off.
REPLAY="${REPEDGE_DEMO_REPLAY-../shared/data/replab2013/automotive_en.tsv}"
REPLAY_ENTITY="${REPEDGE_DEMO_REPLAY_ENTITY:-Honda}"
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
# Every record goes to a file; the terminal shows those of the sample tweets (the replayed
# history carries created_at and is the dashboard's to show).
mosquitto_sub -p "$PORT" -t repedge/labels -t repedge/errors -v \
    > >(tee "$STATE/records.log" | grep --line-buffered -v '"created_at"') &
pids+=($!)
# Tweets published before the node subscribes would reach nobody: wait for it to be online
# (its retained status), however long loading the model takes on a busy machine.
for _ in $(seq 300); do
    mosquitto_sub -p "$PORT" -t repedge/nodes/demo/status -C 1 -W 1 2>/dev/null |
        grep -q '"online"' && break
done

if [ -n "$REPLAY" ] && [ -f "$REPLAY" ]; then
    echo "replaying $REPLAY_ENTITY's tweets of $REPLAY (a month in under a minute) for the" \
        "dashboard's history and alerts; log: $STATE/replay.log"
    python -m node replay --data "$REPLAY" --entity "$REPLAY_ENTITY" --speed 100000 \
        --max-wait 0.05 --broker "mqtt://localhost:$PORT" > "$STATE/replay.log" 2>&1 &
    pids+=($!)
elif [ -n "$REPLAY" ]; then
    echo "(no $REPLAY: no replayed history; set REPEDGE_DEMO_REPLAY to a RepLab TSV)"
fi

while IFS= read -r tweet; do
    [ -n "$tweet" ] && mosquitto_pub -p "$PORT" -q 1 -t repedge/tweets -m "$tweet"
    sleep 0.3
done < scripts/demo_tweets.txt
echo "(published $(grep -c . scripts/demo_tweets.txt) tweets; node log: $STATE/node.log;" \
    "telemetry: mosquitto_sub -p $PORT -t 'repedge/nodes/#' -v)"
if [ "${1:-}" = "--once" ]; then
    # Until every sample tweet has its record (the node may still be busy with the replay).
    want=$(grep -c . scripts/demo_tweets.txt)
    for _ in $(seq 600); do
        got=$(grep -v '"created_at"' "$STATE/records.log" | grep -c '^repedge/' || true)
        [ "$got" -ge "$want" ] && break
        sleep 0.2
    done
    sleep 1
    exit 0
fi
wait
