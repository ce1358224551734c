#!/usr/bin/env bash
# A whole fleet on this machine: one central broker and two sites (north, south), each
# with its own broker bridged to the centre and two nodes in one share group. Tweets go in
# at the sites; every label comes out at the centre under sites/<site>/repedge/labels, live.
# Ctrl-C stops everything; --once stops after one round of tweets (and reports the count).
#
# Ports: REPEDGE_FLEET_PORT (default 18840) for the centre, +1 and +2 for the sites.
# State and logs: REPEDGE_FLEET_STATE (default .fleet-demo), wiped at start.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then bash scripts/setup.sh; fi
. .venv/bin/activate

BASE="${REPEDGE_FLEET_PORT:-18840}"
STATE="${REPEDGE_FLEET_STATE:-.fleet-demo}"
ROUNDS=0
if [[ "${1:-}" == "--once" ]]; then ROUNDS=1; fi
rm -rf "$STATE"
mkdir -p "$STATE"

pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Every process of the label pipeline is a child of this script, not only its last one:
    # a mosquitto_sub left behind would wait for the centre for ever.
    pkill -TERM -P $$ 2>/dev/null || true
    sleep 1
    # mosquitto_sub can miss SIGTERM (a thread blocks it); nothing may outlive the demo.
    pkill -KILL -P $$ 2>/dev/null || true
    wait 2>/dev/null || true
    echo "fleet stopped (logs in $STATE)"
}
trap cleanup EXIT INT TERM

wait_port() {
    for _ in $(seq 100); do
        mosquitto_pub -p "$1" -t repedge/demo/ping -n >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: no broker on port $1 (see $STATE)" >&2
    exit 1
}

python -m broker start --port "$BASE" --data-dir "$STATE/central" \
    > "$STATE/central.log" 2>&1 &
pids+=($!)
wait_port "$BASE"

sites=(north south)
for i in 0 1; do
    site="${sites[$i]}"
    port=$((BASE + 1 + i))
    python -m broker start --port "$port" --data-dir "$STATE/$site/broker" \
        --bridge-to "mqtt://127.0.0.1:$BASE" --site "$site" > "$STATE/$site-broker.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
    for n in 1 2; do
        # `python -m node` rather than `node`: inside a venv `node` may be Node.js.
        python -m node start --model models/default --broker "mqtt://127.0.0.1:$port" \
            --node-id "$site-$n" --share-group "$site" --threads 1 \
            --state-dir "$STATE/$site/node-$n" > "$STATE/$site-node-$n.log" 2>&1 &
        pids+=($!)
    done
done

echo "centre: mqtt://127.0.0.1:$BASE   sites: north :$((BASE + 1)), south :$((BASE + 2))"
echo "watch the fleet yourself: mosquitto_sub -p $BASE -t 'sites/+/repedge/#' -v"
echo "labels arriving at the centre (site, node, label, tweet id), Ctrl-C to stop:"
# One line per label, as the centre sees it.
mosquitto_sub -p "$BASE" -q 1 -t 'sites/+/repedge/labels' -v | python -u -c '
import json, sys
for line in sys.stdin:
    topic, _, payload = line.partition(" ")
    r, site = json.loads(payload), topic.split("/")[1]
    print("%-6s %-8s %-9s %s" % (site, r["node_id"], r["label"], r["id"]))
' | tee "$STATE/centre-labels.txt" &
pids+=($!)

# Wait until every node has said it is online (retained status, forwarded by the bridges).
for _ in $(seq 600); do
    # -s KILL: mosquitto_sub -W can hang with SIGTERM blocked, and plain timeout then waits.
    online=$(timeout -s KILL 3 mosquitto_sub -p "$BASE" -t 'sites/+/repedge/nodes/+/status' -W 1 \
        2>/dev/null | grep -c '"online"' || true)
    [[ "$online" -ge 4 ]] && break
done

round=0
while :; do
    round=$((round + 1))
    i=0
    while IFS= read -r text; do
        [[ -z "$text" ]] && continue
        i=$((i + 1))
        for s in 0 1; do
            site="${sites[$s]}"
            tweet=$(python -c 'import json,sys; t=sys.argv[1]
try: t=json.loads(t)["text"]
except ValueError: pass
print(json.dumps({"id": sys.argv[2], "text": t}))' "$text" "$site-r$round-$i")
            mosquitto_pub -p $((BASE + 1 + s)) -q 1 -t repedge/tweets -m "$tweet"
        done
        sleep 0.5
    done < scripts/demo_tweets.txt
    if [[ "$ROUNDS" -gt 0 && "$round" -ge "$ROUNDS" ]]; then
        sleep 3
        echo "$(grep -c . "$STATE/centre-labels.txt") labels reached the centre" \
            "($((2 * i)) tweets sent)"
        exit 0
    fi
done
