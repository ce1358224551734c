"""The dashboard's state, event stream and terminal frame, without a browser.

A real Mosquitto feeds the state wherever MQTT is involved; the clock is injected only
to step the bounded history past its hour without waiting for one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from common.endpoint import BrokerEndpoint
from common.mqttclient import new_client
from dashboard.source import Subscriber
from dashboard.state import MAX_ENTITIES, MAX_REASONS, SENTIMENT, DashboardState
from dashboard.top import render
from dashboard.web import DashboardServer, Hub
from harness import REPO, WAIT_S, publish, wait_until

STATIC = Path(__file__).resolve().parents[1] / "dashboard" / "static"


def label(i: int, entity: str | None = "Volvo", **extra) -> bytes:
    record = {
        "id": f"t{i}",
        "label": ("negative", "neutral", "positive")[i % 3],
        "scores": {"negative": 0.2, "neutral": 0.3, "positive": 0.5},
        "model": {"name": "m", "version": "1", "variant": "int8", "sha256": "0" * 64},
        "node_id": "n1",
        "latency_ms": 3.0,
        "timestamp": "2026-01-01T00:00:00.000Z",
        **extra,
    }
    if entity is not None:
        record["entity"] = entity
    return json.dumps(record).encode()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_labels_are_counted_per_entity_minute_and_split_by_related():
    state = DashboardState(clock=Clock())
    for i in range(6):
        state.ingest("repedge/labels", label(i, related=i < 4))
    state.ingest("repedge/labels", label(9, entity=None))
    snap = state.snapshot()
    by_name = {e["name"]: e for e in snap["entities"]}
    assert set(by_name) == {"Volvo", SENTIMENT}
    [bucket] = by_name["Volvo"]["minutes"].values()
    assert bucket["all"] == {"negative": 2, "neutral": 2, "positive": 2}
    assert sum(bucket["related"].values()) == 4 and sum(bucket["unrelated"].values()) == 2
    assert [r["id"] for r in by_name["Volvo"]["recent"]] == [f"t{i}" for i in range(6)]
    assert snap["labels_total"] == 7


def test_history_and_recent_tweets_are_bounded():
    clock = Clock()
    state = DashboardState(history_minutes=60, recent=5, clock=clock)
    for minute in range(90):
        clock.now += 60
        state.ingest("repedge/labels", label(minute))
        state.ingest("repedge/errors", json.dumps({"reason": "too_large"}).encode())
    [volvo] = state.snapshot()["entities"]
    assert len(volvo["minutes"]) <= 61  # this minute and the 60 before it
    assert min(map(int, volvo["minutes"])) > int(clock.now // 60) - 61
    assert len(volvo["recent"]) == 5 and volvo["total"] == 90
    assert len(state.snapshot()["errors"]["minutes"]) <= 61
    for i in range(MAX_ENTITIES + 10):  # a flood of made-up entities cannot grow memory
        state.ingest("repedge/labels", label(i, entity=f"e{i}"))
    assert len(state.snapshot()["entities"]) == MAX_ENTITIES
    for i in range(MAX_REASONS + 10):  # and made-up error reasons end up as "other"
        state.ingest("repedge/errors", json.dumps({"reason": f"r{i}"}).encode())
    newest = state.snapshot()["errors"]["minutes"][str(int(clock.now // 60))]
    assert len(newest) <= MAX_REASONS + 1 and newest["other"] >= 10


@pytest.mark.parametrize(
    "topic, payload",
    [
        ("repedge/nodes/n1/telemetry", b"{not json"),
        ("repedge/nodes/n1/telemetry", b"[1, 2]"),
        ("repedge/nodes/n1/telemetry", b"\xff\xfe"),
        ("repedge/nodes/n1/telemetry", b"[" * 100_000),
        ("repedge/nodes/n1/status", b'{"state": "sleeping"}'),
        ("repedge/nodes/n1/whatever", b"{}"),
        ("repedge/labels", b'{"label": 7}'),
        ("repedge/tweets", b"hello"),
    ],
)
def test_bad_messages_are_counted_not_raised(topic, payload):
    state = DashboardState()
    state.ingest(topic, payload)
    snap = state.snapshot()
    assert snap["ignored"] == 1 and snap["last_ignored"]
    assert snap["labels_total"] == 0


def test_telemetry_reads_nested_and_flat_fields_and_ignores_wrong_types():
    state = DashboardState()
    nested = {
        "throughput_per_s": 12.5,
        "latency_ms": {"p50": 4.0, "p99": 20.0},
        "queue_depth": 3,
        "cpu_percent": "high",  # wrong type: not shown, not fatal
        "rss_bytes": 10_000_000,
        "cpu_temperature_c": None,
        "queue_size": int("9" * 400),  # valid JSON, too big for a float
        "new_field": {"x": 1},
        "provisioning": [{"event": "installed", "time": "t", "version": "1.1.0"}],
    }
    state.ingest("repedge/nodes/n1/telemetry", json.dumps(nested).encode())
    [card] = state.snapshot()["nodes"]
    t = card["telemetry"]
    assert (t["tweets_per_s"], t["p50_ms"], t["p99_ms"], t["queue_depth"]) == (12.5, 4, 20, 3)
    assert t["cpu_percent"] is None and t["temperature_c"] is None and t["queue_size"] is None
    assert card["last_event"]["event"] == "installed" and "1.1.0" in card["last_event"]["detail"]
    flat = {"tweets_per_s": 99.0, "latency_p99_ms": 7.5, "latency_ms": {"p99": 1000}}
    state.ingest("repedge/nodes/n1/telemetry", json.dumps(flat).encode())
    t = state.snapshot()["nodes"][0]["telemetry"]
    assert t["tweets_per_s"] == 99.0 and t["p99_ms"] == 7.5  # flat fields win


def test_status_since_tracks_changes_and_retained_timestamps():
    clock = Clock()
    state = DashboardState(clock=clock)
    retained = {"node_id": "n1", "state": "online", "timestamp": "2026-01-01T00:00:00.000Z"}
    state.ingest("repedge/nodes/n1/status", json.dumps(retained).encode(), retain=True)
    card = state.snapshot()["nodes"][0]
    assert card["since"] == 1767225600.0 and card["since_retained"]
    clock.now += 10
    offline = {"state": "offline", "reason": "connection lost", "timestamp": "2020-01-01T00:00Z"}
    state.ingest("repedge/nodes/n1/status", json.dumps(offline).encode())
    card = state.snapshot()["nodes"][0]
    # A live Last Will carries the time the node connected; the change happened now.
    assert (card["state"], card["since"], card["reason"]) == (
        "offline",
        clock.now,
        offline["reason"],
    )


def test_deltas_carry_only_changes_and_a_snapshot_resets_nothing():
    state = DashboardState()
    assert state.take_delta() is None
    state.ingest("repedge/labels", label(1))
    first = state.take_delta()
    assert first is not None and [r["id"] for r in first["entities"]["Volvo"]["recent"]] == ["t1"]
    assert state.take_delta() is None
    state.ingest("repedge/labels", label(2))
    snapshot, delta = state.snapshot_and_delta()
    assert [r["id"] for r in delta["entities"]["Volvo"]["recent"]] == ["t2"]
    assert [r["id"] for r in snapshot["entities"][0]["recent"]] == ["t1", "t2"]


def read_event(stream) -> tuple[str, dict]:
    """One Server-Sent Event (skipping comments and the retry line)."""
    event, data = "", None
    while True:
        line = stream.readline().decode()
        if line == "\n" and data is not None:
            return event, json.loads(data)
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            data = line[6:]


def test_event_stream_gives_a_late_browser_the_history_then_live_deltas(mosquitto, topics):
    state = DashboardState()
    source = Subscriber(
        state, BrokerEndpoint.parse(mosquitto.url), [topics.labels, "repedge/nodes/+/+"]
    )
    source.start()
    hub = Hub(state, push_interval=0.05)
    server = DashboardServer(("127.0.0.1", 0), state, hub)
    hub.start()
    server.start()
    try:
        assert source.connected.wait(WAIT_S)
        publish(mosquitto, topics.labels, [label(i) for i in range(10)])
        with urllib.request.urlopen(f"{server.url}events", timeout=WAIT_S) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            event, snap = read_event(stream)
            while snap["labels_total"] < 10:  # the subscriber may still be delivering
                event, snap = read_event(stream)
            publish(mosquitto, topics.labels, [label(i) for i in range(10, 15)])
            seen: list[str] = []
            while len(seen) < 5:
                event, delta = read_event(stream)
                assert event == "delta"
                seen += [r["id"] for r in delta["entities"].get("Volvo", {}).get("recent", [])]
        assert seen[-5:] == [f"t{i}" for i in range(10, 15)]
        page = urllib.request.urlopen(server.url, timeout=WAIT_S)
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    finally:
        hub.stop()
        server.close()
        source.stop()


def test_page_loads_nothing_from_outside_and_chartjs_is_the_vendored_release():
    html = (STATIC / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        # The page's own paths (files, the CSV export, /teach) or data: URLs; never another
        # origin, protocol-relative "//host" included.
        local = ref.startswith("/") and not ref.startswith("//")
        assert local or ref.startswith("data:"), ref
    for script in ("app.js", "history.js"):
        assert "http" not in (STATIC / script).read_text().replace("http://", "")
    note = (STATIC / "vendor" / "VENDOR.md").read_text()
    digest = hashlib.sha256((STATIC / "vendor" / "chart.umd.min.js").read_bytes()).hexdigest()
    assert digest in note and "4.6.1" in note
    assert "MIT License" in (STATIC / "vendor" / "chart.js-LICENSE.md").read_text()


def test_terminal_frame_fits_80x24_and_prints_mqtt_strings_literally():
    state = DashboardState()
    for n in range(12):  # more nodes and entities than fit: the frame keeps to 24 lines
        status = {"state": "online", "model": {"version": "1.1.0", "variant": "int8"}}
        state.ingest(f"repedge/nodes/[bold]n{n}/status", json.dumps(status).encode())
        state.ingest("repedge/labels", label(n, entity=f"brand-{n}"))
    state.ingest("repedge/errors", json.dumps({"reason": "malformed_json"}).encode())
    console = Console(width=80, height=24, record=True, color_system=None)
    console.print(render(state.snapshot(), 80, 24))
    lines = console.export_text().rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "[bold]n11" in text  # literal, not rich markup; the newest node first
    assert "brand-" in text and "malformed_json 1" in text and "more nodes" in text


def test_subscriber_reads_a_tls_broker_verified_against_cafile(tmp_path):
    from broker.certs import CA_CERT, make_certs
    from harness import start_mosquitto

    certs = tmp_path / "tls"
    make_certs(certs)
    broker = start_mosquitto(tmp_path / "broker", tls_dir=certs)
    state = DashboardState()
    address = BrokerEndpoint.parse(f"mqtts://localhost:{broker.port}", cafile=str(certs / CA_CERT))
    source = Subscriber(state, address, ["repedge/labels"])
    source.start()
    sender = new_client(address)
    try:
        assert source.connected.wait(WAIT_S), source.last_error
        sender.connect(*address.address)
        sender.loop_start()
        sender.publish("repedge/labels", label(1), qos=1).wait_for_publish(WAIT_S)
        wait_until(lambda: state.snapshot()["labels_total"] >= 1, what="the label counted")
        assert state.snapshot()["labels_total"] == 1
        assert state.snapshot()["broker"] == f"mqtts://localhost:{broker.port}"
    finally:
        sender.disconnect()
        sender.loop_stop()
        source.stop()
        broker.stop()


def test_cli_refuses_a_bad_broker_url_with_a_clear_message():
    run = subprocess.run(
        [sys.executable, "-m", "dashboard", "serve", "--broker", "http://localhost:1883"],
        cwd=REPO, capture_output=True, text=True, timeout=WAIT_S, check=False,
        env={**os.environ, "COLUMNS": "200"},  # typer boxes its errors; keep them on one line
    )  # fmt: skip
    assert run.returncode == 2
    assert "use mqtt:// or mqtts://" in run.stderr and "Traceback" not in run.stderr


def test_top_once_prints_one_frame_from_the_broker(mosquitto, topics):
    status = {"node_id": "once-node", "state": "online", "model": {"version": "9.9.9"}}
    retained_topic = f"repedge/nodes/once-{topics.prefix.rsplit('/', 1)[-1]}/status"
    client = new_client(mosquitto.endpoint())
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        client.publish(retained_topic, json.dumps(status), qos=1, retain=True).wait_for_publish(
            WAIT_S
        )
        run = subprocess.run(
            [sys.executable, "-m", "dashboard", "top", "--broker", mosquitto.url,
             "--topic", retained_topic, "--once", "--wait", "2"],
            cwd=REPO, capture_output=True, text=True, timeout=WAIT_S, check=False,
            env={**os.environ, "COLUMNS": "80", "LINES": "24"},
        )  # fmt: skip
    finally:
        # Clear the retained status so no later test sees this made-up node.
        client.publish(retained_topic, b"", qos=1, retain=True).wait_for_publish(WAIT_S)
        client.disconnect()
        client.loop_stop()
    assert run.returncode == 0, run.stderr
    assert "once-" in run.stdout and "9.9.9" in run.stdout and "online" in run.stdout
