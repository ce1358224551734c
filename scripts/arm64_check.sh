#!/usr/bin/env bash
# The node on arm64 (Raspberry Pi-class), checked on an x86_64 machine under QEMU user
# emulation: an arm64 Debian userland from debootstrap, aarch64 wheels from PyPI, then
#   1. the node's tests that need neither TensorFlow nor a second process,
#   2. a real arm64 `node start` behind an x86 Mosquitto on loopback, fed the canary tweets
#      and labelled samples, its labels compared with x86_64's,
#   3. `node bench --accuracy-only` on the same samples on both architectures.
# Timings under emulation mean nothing, so none are reported. Too slow for CI: run by hand
#   scripts/arm64_check.sh [OUT_DIR]          (default docs/arm64)
# Environment: MODEL (default models/default), DATA (../shared/data), SAMPLE (300 per file),
# ARM64_WORK (.arm64, gitignored), DEBIAN_MIRROR; REPORT_ONLY=1 rewrites the report from the
# last run's results in ARM64_WORK without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-docs/arm64}")
WORK=$(realpath -m "${ARM64_WORK:-.arm64}")
ROOT=$WORK/root
SITE=$WORK/site
MODEL=$(realpath "${MODEL:-models/default}")
DATA=$(realpath -m "${DATA:-../shared/data}")
SAMPLE=${SAMPLE:-300}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# bookworm's python3 is 3.11, the dev machine's minor version: the same cp311 wheels.
SUITE=bookworm
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
NICE="nice -n 15"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
mkdir -p "$WORK" "$OUT"
log() { printf '== %s\n' "$*" >&2; }

# -- 1. QEMU and debootstrap, from Debian ---------------------------------------------------
if ! command -v debootstrap >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi
# bookworm's qemu-user-static (QEMU 7.2) dies with SIGSEGV inside ai-edge-litert 2.3's
# interpreter constructor; trixie's qemu-user (QEMU 10, static binaries) runs it. It is
# fetched with apt's own client under a private configuration: the host's sources and
# installed packages stay as they are.
QEMU=${QEMU:-$WORK/qemu/usr/bin/qemu-aarch64}
if [ ! -x "$QEMU" ]; then
    log "fetching Debian trixie's qemu-user"
    APT="$WORK/apt"
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
    echo "deb $MIRROR trixie main" >"$APT/sources.list"
    APTO=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache")
    apt-get "${APTO[@]}" update -qq
    (cd "$APT" && apt-get "${APTO[@]}" download qemu-user 2>/dev/null)
    dpkg-deb -x "$APT"/qemu-user_*_amd64.deb "$WORK/qemu"
fi
QEMU_VERSION=$("$QEMU" --version | head -1)

# -- 2. the arm64 root ------------------------------------------------------------------------
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    log "debootstrap --arch arm64 --foreign $SUITE"
    $NICE debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,libstdc++6,libgomp1 "$SUITE" "$ROOT" "$MIRROR"
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        cp "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"
        $SUDO chroot "$ROOT" /debootstrap/debootstrap --second-stage
    else
        # No binfmt_misc: an emulated shell cannot exec the second stage's arm64 tools.
        # Unpack the downloaded packages as the second stage would; a Python userland needs
        # none of their maintainer scripts.
        log "no binfmt_misc: unpacking the second stage's packages with dpkg-deb"
        for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
    fi
fi
arm() {  # the arm64 python, with the arm64 root as QEMU's library prefix
    PYTHONPATH="$SITE:$REPO" $NICE "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3" "$@"
}
host() { PYTHONPATH="$REPO" $NICE "$HOST_PY" "$@"; }

# -- 3. aarch64 wheels: the node's dependencies from pyproject.toml, and the test runner --------
if [ ! -d "$SITE/ai_edge_litert" ] || [ ! -d "$SITE/hypothesis" ]; then
    log "aarch64 wheels from PyPI"
    mapfile -t DEPS < <("$HOST_PY" -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
    PLATFORMS=()
    for glibc in 17 24 26 27 28 31 34 35 36; do PLATFORMS+=(--platform "manylinux_2_${glibc}_aarch64"); done
    $NICE "$HOST_PY" -m pip install -q --target "$SITE" "${PLATFORMS[@]}" --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp --only-binary=:all: \
        "${DEPS[@]}" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
fi
ARM_PY=$(arm -c 'import platform; print(platform.python_version(), platform.machine())')
ARM_LITERT=$(arm -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))')
log "arm64 python: $ARM_PY, ai-edge-litert $ARM_LITERT, $QEMU_VERSION"

# -- 4. the node's tests ------------------------------------------------------------------------
# Deselects tests whose fixtures build a model with TensorFlow (there is none on a node).
cat >"$WORK/no_tensorflow_plugin.py" <<'PY'
NEEDS_TENSORFLOW = {"tiny_bundle", "tiny_classifier", "bench_bundle"}


def pytest_collection_modifyitems(config, items):
    drop = [i for i in items if NEEDS_TENSORFLOW & set(getattr(i, "fixturenames", ()))]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if i not in drop]
PY
TESTS=(tests/test_textclean.py tests/test_node_messages.py tests/test_node_ledger.py
       tests/test_node_core.py tests/test_metrics.py tests/test_trainer_data.py)
RUN=$([ "${REPORT_ONLY:-0}" = 1 ] && echo no || echo yes)
if [ "$RUN" = yes ]; then
    log "node tests on arm64: ${TESTS[*]}"
    set +e
    PYTHONPATH="$WORK:$SITE:$REPO" $NICE "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3" -m pytest -q \
        -p no:cacheprovider -p no_tensorflow_plugin "${TESTS[@]}" >"$WORK/pytest.log" 2>&1
    echo $? >"$WORK/pytest.rc"
    set -e
fi
TESTS_RC=$(cat "$WORK/pytest.rc")
TESTS_SUMMARY=$(grep -E "passed|failed|error" "$WORK/pytest.log" | tail -1)
log "tests: $TESTS_SUMMARY"

# -- 5. labels: x86_64 in-process, arm64 in-process, arm64 node through Mosquitto -------------
SETS=(--data "$DATA/semeval2017/train_2013-2016.tsv" --data "$DATA/replab2013/automotive_en.tsv")
# Dumps are kept per model and sample size: a rerun (say, after a failed later step) reuses them.
KEY=$(cat "$MODEL"/manifest.json "$MODEL"/*.tflite | sha256sum | cut -c1-12)-$SAMPLE
if [ ! -s "$WORK/x86-$KEY.json" ]; then
    log "labels on x86_64"
    host -m bench.compare dump --model "$MODEL" "${SETS[@]}" --sample "$SAMPLE" --out "$WORK/x86-$KEY.json"
fi
if [ ! -s "$WORK/arm64-$KEY.json" ]; then
    log "labels on arm64 (emulated; minutes)"
    arm -m bench.compare dump --model "$MODEL" "${SETS[@]}" --sample "$SAMPLE" --out "$WORK/arm64-$KEY.json"
fi
cp "$WORK/x86-$KEY.json" "$WORK/x86.json"
cp "$WORK/arm64-$KEY.json" "$WORK/arm64.json"

if [ "$RUN" = yes ]; then
PORT=$("$HOST_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER_PID=$!
rm -rf "$WORK/node-state"
# `node start` checks its options, then re-execs Python as `python -m node.serve` with them
# in REPEDGE_NODE_SPEC. Without binfmt_misc the emulated process cannot exec an arm64
# binary, so the spec is taken from `node start` here and node.serve is started directly.
SPEC=$(arm -c 'import json, sys
import node.serve
node.serve.exec_serve = lambda spec: (print(json.dumps(spec)), sys.exit(0))
from node.cli import app
app(sys.argv[1:])' start --model "$MODEL" --broker "mqtt://127.0.0.1:$PORT" --node-id arm64 \
    --threads 1 --state-dir "$WORK/node-state" --tweets-topic arm64/tweets \
    --labels-topic arm64/labels --errors-topic arm64/errors --log-level warning)
REPEDGE_NODE_SPEC=$SPEC PYTHONPATH="$SITE:$REPO" $NICE "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3" \
    -m node.serve >"$WORK/node.log" 2>&1 &
NODE_PID=$!
cleanup() { kill "$NODE_PID" "$BROKER_PID" 2>/dev/null || true; }
trap cleanup EXIT
log "arm64 node behind Mosquitto on 127.0.0.1:$PORT"
host -m bench.compare mqtt --broker "mqtt://127.0.0.1:$PORT" --prefix arm64 \
    --node-id arm64 --timeout 900 --inputs "$WORK/x86.json" --out "$WORK/arm64_node.json"
kill -TERM "$NODE_PID" && wait "$NODE_PID" || true
fi
NODE_RECORDS=$(host -c 'import json, sys
items = json.load(open(sys.argv[1]))["items"]
print(sum(1 for i in items if i["record"]), "of", len(items))' "$WORK/arm64_node.json")
host -m bench.compare compare "$WORK/x86.json" "$WORK/arm64.json" --out "$OUT/labels_in_process.json" >/dev/null
host -m bench.compare compare "$WORK/x86.json" "$WORK/arm64_node.json" --out "$OUT/labels_node_mqtt.json" >/dev/null

# -- 6. node bench, accuracy only, on both architectures ---------------------------------------
for set in semeval2017/train_2013-2016.tsv replab2013/automotive_en.tsv; do
    [ "$RUN" = yes ] || break
    name=$(basename "$set" .tsv)
    log "node bench --accuracy-only, $name, x86_64 and arm64"
    host -m node bench --model "$MODEL" --data "$DATA/$set" --sample "$SAMPLE" --accuracy-only \
        --in-process --out "$WORK/bench-x86-$name" 2>>"$WORK/bench.log"
    arm -m node bench --model "$MODEL" --data "$DATA/$set" --sample "$SAMPLE" --accuracy-only \
        --in-process --out "$WORK/bench-arm64-$name" 2>>"$WORK/bench.log"
done

# -- 7. the report ------------------------------------------------------------------------------
host - "$OUT" "$WORK" "$SAMPLE" "$QEMU_VERSION" "$ARM_PY" "$ARM_LITERT" "$TESTS_SUMMARY" \
    "$TESTS_RC" "$NODE_RECORDS" "$MODEL" <<'PY'
import json, shutil, sys
from datetime import UTC, datetime
from pathlib import Path

from bench.compare import compare, tolerance_lines

out, work = Path(sys.argv[1]), Path(sys.argv[2])
sample, qemu, arm_py, litert, tests, tests_rc, node_records, model = sys.argv[3:11]
ident = json.loads((work / "x86.json").read_text())["model"]
lines = [
    "# arm64 check (QEMU user emulation)",
    "",
    f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; made by `scripts/arm64_check.sh`",
    f"- model: {ident['name']} {ident['version']} {ident['variant']} "
    f"(sha256 {ident['sha256'][:12]}...), `{Path(model).name}`",
    f"- arm64: Debian bookworm root (debootstrap --foreign, packages unpacked with dpkg-deb), "
    f"Python {arm_py}, ai-edge-litert {litert} and the node's other dependencies as aarch64 "
    f"wheels from PyPI, run by {qemu} (`qemu-aarch64 -L ROOT ROOT/usr/bin/python3`)",
    "- x86_64: the development machine's virtual environment, same code",
    "- timings under emulation mean nothing: none are reported",
    "",
    "## Node tests on arm64",
    "",
    f"tests/test_textclean.py, test_node_messages.py, test_node_ledger.py, test_node_core.py, "
    f"test_metrics.py, test_trainer_data.py (tests whose fixtures build a model with "
    f"TensorFlow deselected): **{tests}** (exit status {tests_rc}).",
    "",
    "## Labels: arm64 vs x86_64, tweet by tweet",
    "",
    f"The five canary tweets and seeded samples of {sample} labelled tweets of each file "
    "(../shared/data; texts not reproduced here), one tweet per call. In process: the "
    "node's Classifier on arm64. Through Mosquitto: a real arm64 `node start` behind an "
    f"x86_64 Mosquitto on loopback ({node_records} label/error records received).",
    "",
    "| set | tweets | same label, in process | max abs logit diff | same label, arm64 node via MQTT |",
    "|---|---|---|---|---|",
]
inproc = json.loads((out / "labels_in_process.json").read_text())["sets"]
node = json.loads((out / "labels_node_mqtt.json").read_text())["sets"]
for name, s in inproc.items():
    n = node.get(name, {})
    lines.append(
        f"| {name} | {s['tweets']} | {s['same_label']} | {s['max_abs_logit_diff']:.2e} | "
        f"{n.get('same_label', 'n/a')} |"
    )
summary = json.loads((out / "labels_in_process.json").read_text())
via = compare(json.loads((work / "arm64.json").read_text()),
              json.loads((work / "arm64_node.json").read_text()))["sets"]
lines += ["", *tolerance_lines(summary),
          f"- The arm64 node behind Mosquitto against the arm64 Classifier in process: "
          f"{sum(x['same_label'] for x in via.values())} of "
          f"{sum(x['tweets'] for x in via.values())} labels identical.",
          "- Differences per tweet (index into the dump, labels, margin): "
          "labels_in_process.json, labels_node_mqtt.json."]
lines += ["", "## node bench --accuracy-only: arm64 vs x86_64", "",
          "Seeded samples of the whole files, which may include tweets the model was trained on: these "
          "figures compare the two architectures, not the model's quality (docs/benchmark.md "
          "has that, on held-out tweets).", "",
          "| data (seeded sample) | accuracy x86_64 | accuracy arm64 | macro-F1 x86_64 | macro-F1 arm64 | AvgRec x86_64 | AvgRec arm64 |",
          "|---|---|---|---|---|---|---|"]
notes: list[str] = []
for run in sorted(work.glob("bench-arm64-*")):
    bench = out / run.name
    shutil.copytree(run, bench, dirs_exist_ok=True)
    name = bench.name.removeprefix("bench-arm64-")
    a = json.loads((work / f"bench-x86-{name}" / "report.json").read_text())
    b = json.loads((bench / "report.json").read_text())
    (row_a,), (row_b,) = a["variants"].values(), b["variants"].values()
    acc_a, acc_b = row_a["accuracy"], row_b["accuracy"]
    cells = [f"{acc_a[k]:.4f} | {acc_b[k]:.4f}" for k in ("accuracy", "macro_f1", "macro_recall")]
    lines.append(f"| {name} ({a['tweets']['count']}) | " + " | ".join(cells) + " |")
    apart = round(abs(acc_a["accuracy"] - acc_b["accuracy"]) * a["tweets"]["count"])
    if apart:
        notes.append(f"- {name}: the accuracies are {apart} correct tweet(s) apart, of "
                     f"{a['tweets']['count']} (the near ties above).")
    # The committed copy keeps the numbers, not the per-tweet predictions.
    for r in b["variants"].values():
        r["accuracy"].pop("predictions", None)
    (bench / "report.json").write_text(json.dumps(b, indent=2) + "\n")
lines += ["", *notes] if notes else []
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT/report.md"
