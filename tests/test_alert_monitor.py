"""Spike alerts in the services: records in, retained alerts, events, discovery out.

The monitor alone (a list stands in for the broker where only the logic is under test),
then `dashboard collect` against a real Mosquitto: the alert is retained on
repedge/alerts/<entity>, its events arrive, and a late subscriber still sees the state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime

from jinja2.sandbox import SandboxedEnvironment
from rich.console import Console

from dashboard.alert_monitor import (
    AlertMonitor,
    discovery_configs,
    entity_level,
    events_topic,
    status_topic,
)
from dashboard.alerts import SpikeRule
from dashboard.state import DashboardState
from dashboard.top import render
from harness import REPO, Collector, publish

T0 = 1_355_000_000 - 1_355_000_000 % 60  # December 2012, a minute boundary
RULE = SpikeRule(alpha=1e-4, min_negative=5)


def record(entity: str, at: float, negative: bool, related: bool | None = True) -> dict:
    scores = {"negative": 0.9, "neutral": 0.05, "positive": 0.05} if negative else {
        "negative": 0.02, "neutral": 0.5, "positive": 0.48}  # fmt: skip
    body = {
        "id": uuid.uuid4().hex[:12],
        "label": "negative" if negative else "neutral",
        "scores": scores,
        "entity": entity,
        "created_at": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "timestamp": "2026-12-05T06:00:00.000Z",
    }
    if related is not None:
        body["related"] = related
    return body


def week_then_burst(entity: str) -> tuple[list[dict], list[dict], list[dict]]:
    """A week at one tweet per 15 min (10 % negative), 12 negatives in an hour, then
    six quiet hours."""
    week = [record(entity, T0 + i * 900, i % 10 == 0) for i in range(7 * 96)]
    burst_at = T0 + 7 * 86400
    burst = [record(entity, burst_at + i * 300, True) for i in range(12)]
    after = [record(entity, burst_at + 3600 + i * 900, i % 10 == 0) for i in range(24)]
    return week, burst, after


class Sent(list):
    def __call__(self, topic: str, payload: str, retain: bool) -> None:
        self.append((topic, json.loads(payload), retain))

    def on(self, topic: str) -> list[tuple[dict, bool]]:
        return [(p, r) for t, p, r in self if t == topic]


def test_monitor_opens_publishes_and_closes() -> None:
    sent = Sent()
    monitor = AlertMonitor(RULE, publish=sent, clock=lambda: 1.8e9)
    week, burst, after = week_then_burst("BMW")
    for rec in week:
        monitor.add("BMW", rec)
    assert monitor.tick() == []
    # Unrelated tweets never count, however negative.
    for rec in burst:
        monitor.add("BMW", {**rec, "related": False})
    assert monitor.tick() == []
    for rec in burst:
        monitor.add("BMW", rec)
    (opened,) = monitor.tick()
    assert opened.kind == "open"
    (event, retain), *_ = sent.on(events_topic("BMW"))
    assert event["event"] == "open" and event["state"] == "open" and not retain
    status, retain = sent.on(status_topic("BMW"))[-1]
    assert retain and status["state"] == "open" and status["entity"] == "BMW"
    assert status["start"].startswith("2012-12-") and status["end"] is None
    assert status["evidence"]["negative"] >= 5 and status["size"] > 4
    assert status["last_hour"]["negative"] == 12 and status["last_hour"]["related"] >= 12
    assert monitor.view()["open"][0]["entity"] == "BMW"
    for rec in after:
        monitor.add("BMW", rec)
    (closed,) = monitor.tick()
    assert closed.kind == "close"
    status, _ = sent.on(status_topic("BMW"))[-1]
    assert status["state"] == "closed" and status["end"] > status["start"]
    assert monitor.view()["open"] == [] and monitor.view()["recent"][0]["event"] == "close"
    # Discovery: once per entity, retained.
    configs = [(t, r) for t, _, r in sent if t.startswith("homeassistant/")]
    assert len(configs) == 3 and all(r for _, r in configs)


def test_low_volume_does_not_alarm_through_the_monitor() -> None:
    monitor = AlertMonitor(RULE, publish=Sent(), clock=lambda: 1.8e9)
    for i in range(4):  # four tweets, all negative, and nothing else ever
        monitor.add("Quiet", record("Quiet", T0 + i * 60, True))
    assert monitor.tick() == []
    assert monitor.status("Quiet")["state"] == "none"


def test_watched_entities_are_bounded() -> None:
    capped = AlertMonitor(RULE, max_entities=2, publish=Sent(), clock=lambda: 1.8e9)
    for name in ("A", "B", "C", "D"):
        capped.add(name, record(name, T0, False))
    capped.tick()
    assert capped.view()["watched"] == 2 and capped.view()["ignored_records"] == 2
    sent = Sent()
    configured = AlertMonitor(RULE, entities=["Fiat"], publish=sent, clock=lambda: 1.8e9)
    for name in ("Fiat", "Kia", "Fiat"):
        configured.add(name, record(name, T0, False))
    configured.tick()
    assert {t for t, _, _ in sent if t.startswith("repedge/")} == {status_topic("Fiat")}
    assert configured.view()["ignored_records"] == 1


def test_entity_names_make_safe_distinct_topic_levels() -> None:
    assert entity_level("BMW") == "BMW" and entity_level("Banco Santander") == "Banco Santander"
    odd = [entity_level(name) for name in ("a/b", "a+b", "a#b", "a_b", "$SYS", "")]
    assert len(set(odd)) == len(odd)
    assert not any(c in level for level in odd for c in "/+#") and odd[3] == "a_b"
    assert not odd[4].startswith("$")


def render_template(template: str, payload: dict) -> str:
    env = SandboxedEnvironment()
    return env.from_string(template).render(value=json.dumps(payload), value_json=payload)


def test_home_assistant_templates_render_the_status() -> None:
    monitor = AlertMonitor(RULE, clock=lambda: 1.8e9)
    week, burst, _ = week_then_burst("Audi")
    for rec in week + burst:
        monitor.add("Audi", rec)
    monitor.tick()
    status = monitor.status("Audi")
    (spike_topic, spike), (_, share), (_, volume) = discovery_configs("Audi")
    assert spike_topic == "homeassistant/binary_sensor/repedge_alerts/Audi_spike/config"
    assert spike["state_topic"] == status_topic("Audi") and spike["device_class"] == "problem"
    assert render_template(spike["value_template"], status) == "ON"
    assert render_template(spike["value_template"], {**status, "state": "closed"}) == "OFF"
    shown = float(render_template(share["value_template"], status))
    assert shown == round(status["last_hour"]["negative_share"] * 100, 1) and shown > 50
    assert render_template(volume["value_template"], status) == str(status["last_hour"]["related"])
    empty = {**status, "last_hour": {"related": 0, "negative": 0, "negative_share": None}}
    assert render_template(share["value_template"], empty) == "None"  # HA: unknown
    attributes = json.loads(render_template(spike["json_attributes_template"], status))
    assert attributes["evidence"]["negative"] == status["evidence"]["negative"]
    # Two entities never share a sensor.
    ids = {c["unique_id"] for name in ("a/b", "a_b") for _, c in discovery_configs(name)}
    assert len(ids) == 6


def test_banners_show_open_alerts() -> None:
    state = DashboardState()
    alert = {
        "entity": "Volvo",
        "state": "open",
        "start": "2012-12-19T08:15:00.000Z",
        "end": None,
        "size": 7.5,
        "evidence": {"negative": 9, "related": 14, "baseline_share": 0.12},
    }
    state.ingest("repedge/alerts/Volvo", json.dumps(alert).encode(), retain=True)
    state.ingest(
        "repedge/alerts/Fiat", json.dumps({**alert, "entity": "Fiat", "state": "closed"}).encode()
    )
    state.ingest("repedge/alerts/Bad", b'{"state": "exploded"}')
    snapshot = state.snapshot()
    assert [a["entity"] for a in snapshot["alerts"]] == ["Volvo"]
    assert snapshot["ignored"] == 1
    console = Console(width=100, record=True)
    console.print(render(snapshot, width=100, height=24))
    text = console.export_text()
    assert "NEGATIVE SPIKE: Volvo since 12-19 08:15 9/14 negative, usual 12%" in text
    state.ingest("repedge/alerts/Volvo", b"", retain=True)  # cleared
    assert state.snapshot()["alerts"] == []
    console = Console(width=100, record=True)
    console.print(render(state.snapshot(), width=100, height=24))
    assert "NEGATIVE SPIKE" not in console.export_text()


def test_collect_publishes_retained_alerts_and_events(mosquitto, tmp_path) -> None:
    entity = f"Brand{uuid.uuid4().hex[:6]}"
    labels_topic = f"test/{uuid.uuid4().hex[:8]}/labels"
    log = tmp_path / "collect.log"
    args = [sys.executable, "-m", "dashboard", "collect", "--broker", mosquitto.url]
    args += ["--topic", labels_topic, "--db", str(tmp_path / "h.sqlite3")]
    args += ["--alert-entity", entity]
    watcher = Collector(mosquitto, [f"repedge/alerts/{entity}", f"repedge/alerts/{entity}/#"])
    with open(log, "wb") as out:
        collect = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
    try:
        watcher.wait_for(
            lambda _: "subscribed to" in log.read_text() or collect.poll() is not None,
            what="dashboard collect to subscribe",
        )
        assert collect.poll() is None, log.read_text()
        week, burst, after = week_then_burst(entity)
        publish(mosquitto, labels_topic, [json.dumps(r) for r in week])
        # Let the week be counted as the baseline before the burst arrives.
        watcher.wait_for(
            lambda msgs: any(m.topic == f"repedge/alerts/{entity}" for m in msgs),
            what="the first status",
        )
        publish(mosquitto, labels_topic, [json.dumps(r) for r in burst])
        opened = watcher.wait_for(
            lambda msgs: [m for m in msgs if m.topic.endswith("/events")],
            what="the open event",
        )
        assert opened[0].json()["event"] == "open" and opened[0].json()["entity"] == entity
        publish(mosquitto, labels_topic, [json.dumps(r) for r in after])
        watcher.wait_for(
            lambda msgs: [m for m in msgs if m.topic.endswith("/events")][1:],
            what="the close event",
        )
    finally:
        watcher.close()
        collect.terminate()
        collect.wait(30)
    # A subscriber that arrives now still gets the last state: it is retained.
    late = Collector(mosquitto, [f"repedge/alerts/{entity}"])
    try:
        (kept,) = late.wait_count(f"repedge/alerts/{entity}", 1)
    finally:
        late.close()
    assert kept.retain and kept.json()["state"] == "closed"
    assert kept.json()["evidence"]["negative"] >= 5 and kept.json()["end"] > kept.json()["start"]


def test_home_assistant_birth_sends_the_discovery_again() -> None:
    sent = Sent()
    state = DashboardState()
    state.alert_monitor = monitor = AlertMonitor(RULE, publish=sent, clock=lambda: 1.8e9)
    monitor.add("Kia", record("Kia", T0, False))
    monitor.tick()
    configs = lambda: [t for t, _, _ in sent if t.startswith("homeassistant/")]  # noqa: E731
    assert len(configs()) == 3
    monitor.tick()
    assert len(configs()) == 3  # once per entity
    state.ingest("homeassistant/status", b"offline")
    monitor.tick()
    assert len(configs()) == 3
    state.ingest("homeassistant/status", b"online")
    monitor.tick()
    assert len(configs()) == 6 and state.snapshot()["ignored"] == 0
