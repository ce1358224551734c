"""History in the running services: `dashboard collect` through kill -9, and the HTTP API.

Real processes on a real Mosquitto; the API is read over HTTP from a real DashboardServer.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http import HTTPStatus
from pathlib import Path

import pytest

from dashboard import history_web
from dashboard.history import HistoryRecorder, HistoryStore
from dashboard.history_tweets import TweetsUnavailable
from dashboard.state import DashboardState
from dashboard.web import DashboardServer, Hub
from harness import REPO, WAIT_S, postgres, publish, wait_until


def recorded(db: Path | str, entity: str) -> int:
    """What the database holds for ``entity``, read as any other reader would."""
    store = HistoryStore(db)
    try:
        return store.entities().get(entity, 0)
    finally:
        store.close()


def labels(prefix: str, count: int, entity: str = "Volvo") -> list[str]:
    return [
        json.dumps({"id": f"{prefix}{i}", "label": "negative", "entity": entity, "related": True})
        for i in range(count)
    ]


class Collect:
    def __init__(self, broker_url: str, topic: str, db: Path | str, log: Path) -> None:
        args = [sys.executable, "-m", "dashboard", "collect", "--broker", broker_url]
        args += ["--topic", topic, "--db", str(db), "--flush-interval", "0.5"]
        self.log = log
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
        # Subscribed: the source logs it once the broker has granted the subscription.
        wait_until(
            lambda: "subscribed to" in log.read_text()[start:] or self.process.poll() is not None,
            what="dashboard collect to subscribe",
        )
        assert self.process.poll() is None, log.read_text()


def test_collect_keeps_history_through_kill_9_and_a_restart(mosquitto, topics, tmp_path):
    db, log = tmp_path / "history.sqlite3", tmp_path / "collect.log"
    first = Collect(mosquitto.url, topics.labels, db, log)
    try:
        publish(mosquitto, topics.labels, labels("a", 40))
        wait_until(lambda: recorded(db, "Volvo") == 40, what="the first 40 labels to be flushed")
        publish(mosquitto, topics.labels, labels("b", 25))
        first.process.send_signal(signal.SIGKILL)  # no goodbye: at most one interval is lost
        first.process.wait(WAIT_S)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    # Intact up to the last flush: a consistent database holding at least what was flushed.
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    survived = recorded(db, "Volvo")
    assert 40 <= survived <= 65

    # The kernel released the dead process's writer lock: a new collector records on. Its
    # persistent session brings what the broker had not delivered or had no ack for; only
    # what was acknowledged but not yet flushed (one interval at most) is gone.
    second = Collect(mosquitto.url, topics.labels, db, log)
    try:
        publish(mosquitto, topics.labels, labels("c", 10))
        wait_until(lambda: recorded(db, "Volvo") >= survived + 10, what="10 more after restart")
        assert recorded(db, "Volvo") <= 75  # nothing counted twice
        # A second recorder on the same database would count everything twice: refused.
        again = [sys.executable, "-m", "dashboard", "collect", "--broker", mosquitto.url]
        duplicate = subprocess.run(
            [*again, "--db", str(db)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert duplicate.returncode == 1 and "another process records" in duplicate.stderr
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(WAIT_S) == 0
    finally:
        if second.process.poll() is None:
            second.process.kill()


def test_labels_published_while_collect_is_down_are_recorded_after_it_restarts(
    mosquitto, topics, tmp_path
):
    db, log = tmp_path / "history.sqlite3", tmp_path / "collect.log"
    first = Collect(mosquitto.url, topics.labels, db, log)
    publish(mosquitto, topics.labels, labels("a", 10, entity="Kia"))
    wait_until(lambda: recorded(db, "Kia") == 10, what="10 labels recorded")
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(WAIT_S) == 0
    publish(mosquitto, topics.labels, labels("down", 15, entity="Kia"))  # nobody subscribed
    second = Collect(mosquitto.url, topics.labels, db, log)
    try:
        # The broker kept the collector's session and queued the 15 for it.
        wait_until(lambda: recorded(db, "Kia") == 25, what="the 15 queued while it was down")
    finally:
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(WAIT_S) == 0


def test_collect_records_into_postgresql_and_serve_reads_it(mosquitto, topics, tmp_path):
    reason = postgres.missing_reason()
    if reason:
        pytest.skip(reason)
    server = postgres.PostgresServer().start()
    try:
        db = server.url
        collector = Collect(mosquitto.url, topics.labels, db, tmp_path / "collect.log")
        try:
            publish(mosquitto, topics.labels, labels("p", 12, entity="Ford"))
            wait_until(lambda: recorded(db, "Ford") == 12, what="12 labels in PostgreSQL")
        finally:
            collector.process.send_signal(signal.SIGTERM)
            assert collector.process.wait(WAIT_S) == 0
        # A dashboard elsewhere reads the same database: the central site's page.
        store = HistoryStore(db)
        state = DashboardState()
        web = DashboardServer(("127.0.0.1", 0), state, Hub(state), store)
        web.start()
        try:
            view = json.loads(get(web, "/api/history?range=1h")[2])
            assert view["db"] == "postgresql" and view["totals"]["Ford"]["negative"] == 12
        finally:
            web.close()
            store.close()
    finally:
        server.stop()


def label_record(entity: str, label: str, at: float, **extra) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    return json.dumps(
        {"id": "x", "label": label, "entity": entity, "timestamp": stamp, **extra}
    ).encode()


@pytest.fixture
def served(tmp_path):
    """A DashboardServer with history on SQLite, fed through the state as MQTT would."""
    store = HistoryStore(tmp_path / "history.sqlite3")
    recorder = HistoryRecorder(store, flush_interval=60)
    state = DashboardState(recorder=recorder)
    hub = Hub(state)
    server = DashboardServer(("127.0.0.1", 0), state, hub, store)
    server.start()
    yield state, server
    server.close()
    store.close()


def get(server: DashboardServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=WAIT_S) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_history_api_answers_ranges_per_entity_and_exports_csv(served):
    state, server = served
    now = time.time()
    for i in range(4):
        state.ingest("repedge/labels", label_record("Kia", "negative", now - 60 * i, related=True))
    state.ingest("repedge/labels", label_record("Kia", "positive", now, related=True))
    for _ in range(5):
        state.ingest("repedge/labels", label_record("Kia", "positive", now, related=False))
    state.ingest("repedge/labels", label_record("=HYPERLINK(1)", "neutral", now))
    state.ingest("repedge/labels", label_record("BMW", "neutral", now - 3 * 86400))

    status, kind, body = get(server, "/api/history?range=1h&entities=Kia,Nobody")
    assert status == 200 and kind == "application/json"
    view = json.loads(body)  # the recorder had not flushed: the route flushes first
    assert view["range"] == "1h" and view["anchor"] == "now" and view["series"]["step"] == 60
    assert view["chosen"] == ["Kia", "Nobody"]
    assert view["totals"]["Kia"] == {
        "negative": 4, "neutral": 0, "positive": 1, "other": 0, "unrelated": 5
    }  # fmt: skip
    assert sum(view["series"]["entities"]["Nobody"]["negative"]) == 0
    assert view["known"] == {"Kia": 10, "=HYPERLINK(1)": 1, "BMW": 1}

    week = json.loads(get(server, "/api/history?range=7d")[2])  # none chosen: the busiest
    assert week["series"]["step"] == 3600 and week["chosen"][0] == "Kia"
    assert sum(week["series"]["entities"]["BMW"]["neutral"]) == 1

    status, kind, body = get(server, "/api/history.csv?range=1h&entities=Kia,%3DHYPERLINK(1)")
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    kia = [r for r in rows if r["entity"] == "Kia" and r["volume_related"] != "0"]
    assert sum(int(r["negative"]) for r in kia) == 4
    assert sum(int(r["unrelated"]) for r in kia) == 5
    assert {r["entity"] for r in rows} == {"Kia", "'=HYPERLINK(1)"}  # no formula in a sheet
    last = next(r for r in kia if r["positive"] == "1")
    assert last["negative_share_pct"] == "50.0"  # 1 negative of 2 related in that minute

    start = int(now - 7200)
    custom = json.loads(get(server, f"/api/history?from={start}&to={start + 3600}")[2])
    assert custom["range"] == "custom" and custom["chosen"] == []

    for bad in ("range=2y", "from=5", "from=9&to=3", "range=1h&step=7", "from=x&to=1"):
        status, kind, body = get(server, f"/api/history?{bad}")
        assert status == 400 and "error" in json.loads(body), bad
    status, _, body = get(server, "/api/history/tweets?entity=Kia&from=1&to=2")
    assert status == 404 and "no broker user to ask the nodes" in json.loads(body)["error"]


def test_the_tweets_route_lists_the_tweets_behind_a_point(tmp_path):
    calls = []

    def texts(entity, start, end, label, related) -> dict:
        calls.append((entity, start, end, label, related))
        if entity == "Locked":
            raise TweetsUnavailable("may not read tweet texts", HTTPStatus.FORBIDDEN)
        tweets = [{"id": "1", "text": "brakes \u202efailed\x1b[2J", "label": "negative"}]
        return {"entity": entity, "tweets": tweets, "total": 1, "note": ""}

    state = DashboardState()
    routes = {"/api/history/tweets": history_web.tweets_route(texts)}
    server = DashboardServer(("127.0.0.1", 0), state, Hub(state), None, extra_routes=routes)
    server.start()
    try:
        status, _, body = get(server, "/api/history/tweets?entity=Kia&from=60&to=120")
        assert status == 200
        # Texts are the feed's: control and bidi characters reach the page as escapes.
        assert json.loads(body)["tweets"][0]["text"] == "brakes \\u202efailed\\x1b[2J"
        get(server, "/api/history/tweets?entity=Kia&from=60&to=120&label=negative&related=0")
        assert calls == [("Kia", 60.0, 120.0, None, None), ("Kia", 60.0, 120.0, "negative", False)]
        status, _, body = get(server, "/api/history/tweets?entity=Locked&from=60&to=120")
        assert status == 403 and "may not read" in json.loads(body)["error"]
        for bad in ("entity=Kia&from=9&to=3", "entity=Kia&from=1", "from=1&to=2",
                    "entity=Kia&from=1&to=2&related=maybe"):  # fmt: skip
            status, _, body = get(server, f"/api/history/tweets?{bad}")
            assert status == 400 and "error" in json.loads(body), bad
        assert len(calls) == 3
    finally:
        server.close()


def test_a_replayed_old_feed_shows_in_a_preset_range_ending_at_its_newest_minute(served):
    state, server = served
    old = 1_349_049_600.0  # 2012-10-01, a RepLab-era tweet replayed with its created_at
    for i in range(3):
        state.ingest(
            "repedge/labels",
            json.dumps(
                {"label": "negative", "entity": "Ryanair", "created_at": (old + 600 * i) * 1000}
            ).encode(),
        )
    view = json.loads(get(server, "/api/history?range=24h")[2])
    assert view["anchor"] == "latest" and view["to"] == old + 1200 + 60
    assert sum(view["series"]["entities"]["Ryanair"]["negative"]) == 3


def test_old_and_future_record_times_leave_the_live_lag_and_counters_alone():
    now = time.time()
    state = DashboardState(clock=lambda: now)
    state.ingest("repedge/labels", label_record("Kia", "neutral", now - 0.02))
    fresh = state.snapshot()["lag_ms"]
    assert 0 <= fresh < 1000
    state.ingest("repedge/labels", label_record("Kia", "neutral", now - 1971))  # redelivered
    state.ingest("repedge/labels", label_record("Kia", "neutral", now + 86400))  # broken clock
    snap = state.snapshot()
    assert snap["lag_ms"] == fresh  # not "ingest lag 1971 s"
    assert snap["late_records"] == 1 and snap["ahead_records"] == 1
    [bucket] = next(e for e in snap["entities"] if e["name"] == "Kia")["minutes"].values()
    assert sum(bucket["all"].values()) == 3  # live counts: by the time they arrived
