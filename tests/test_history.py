"""The history store on SQLite and on a real PostgreSQL (started here; skipped without it)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.history import (
    DAY,
    HOUR,
    MINUTE,
    HistoryRecorder,
    HistoryStore,
    Retention,
    event_time,
    parse_time,
)
from dashboard.history_sql import HistoryDatabaseError, connect
from harness import postgres

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a day boundary


@pytest.fixture(scope="module")
def pg_server() -> Iterator[postgres.PostgresServer]:
    reason = postgres.missing_reason()
    if reason:
        pytest.skip(reason)
    server = postgres.PostgresServer().start()
    yield server
    server.stop()


def fresh_postgres_db(server: postgres.PostgresServer) -> str:
    import psycopg

    name = f"h_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> str:
    """A new, empty history database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite3")
    return fresh_postgres_db(request.getfixturevalue("pg_server"))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(label: str, at: float | None = None, **extra) -> dict:
    out = {"id": "x", "label": label, **extra}
    if at is not None:
        out["created_at"] = int(at * 1000)
    return out


def test_counts_roll_up_to_hours_and_days_and_shares_leave_unrelated_out(db):
    store = HistoryStore(db)
    recorder = HistoryRecorder(store, clock=Clock(T0 + 2 * DAY))
    # Kia: 3 related negative, 1 related positive, 5 unrelated, 2 without `related`.
    for i, (label, related) in enumerate(
        [("negative", True)] * 3
        + [("positive", True)]
        + [("positive", False)] * 5
        + [("neutral", None)] * 2
    ):
        recorder.add("Kia", record(label, T0 + 30 + i * 600), label, related)
    recorder.add("BMW", record("negative", T0 + DAY + 5), "negative", True)
    assert recorder.flush() == 12

    minutes = store.series(["Kia"], T0, T0 + 2 * HOUR, step=MINUTE)
    assert len(minutes["t"]) == 120 and minutes["t"][0] == T0
    kia = minutes["entities"]["Kia"]
    assert sum(kia["negative"]) == 3 and sum(kia["positive"]) == 1
    assert sum(kia["neutral"]) == 2 and sum(kia["unrelated"]) == 5
    assert kia["negative"][0] == 1 and kia["negative"][10] == 1  # the minutes they fell in

    hours = store.series(["Kia", "BMW"], T0, T0 + 2 * DAY, step=HOUR)
    assert hours["entities"]["Kia"]["unrelated"][0] + hours["entities"]["Kia"]["unrelated"][1] == 5
    assert sum(hours["entities"]["BMW"]["negative"]) == 1
    days = store.series(None, T0, T0 + 2 * DAY, step=DAY)
    assert days["entities"]["Kia"]["positive"] == [1, 0]
    assert days["entities"]["BMW"]["negative"] == [0, 1]

    totals = store.totals(None, T0, T0 + DAY)
    assert totals["entities"]["Kia"] == {
        "negative": 3, "neutral": 2, "positive": 1, "other": 0, "unrelated": 5
    }  # fmt: skip
    assert "BMW" not in totals["entities"]
    assert store.entities() == {"Kia": 11, "BMW": 1}
    # A second flush adds to the same rows rather than replacing them.
    recorder.add("Kia", record("negative", T0 + 40), "negative", True)
    recorder.flush()
    assert store.totals(["Kia"], T0, T0 + HOUR)["entities"]["Kia"]["negative"] == 4
    store.close()


def test_history_survives_closing_and_reopening(db):
    store = HistoryStore(db)
    recorder = HistoryRecorder(store, flush_interval=60, clock=Clock(T0 + HOUR))
    recorder.start()
    for i in range(7):
        recorder.add("Volvo", record("negative", T0 + i), "negative", True)
    recorder.stop()  # a clean stop writes what is pending, without waiting for the interval
    store.close()
    again = HistoryStore(db)
    assert again.newest() == T0
    assert again.totals(["Volvo"], T0, T0 + MINUTE)["entities"]["Volvo"]["negative"] == 7
    again.close()


def test_retention_deletes_old_minutes_and_hours_but_keeps_days(db):
    store = HistoryStore(db, Retention(minute_days=7, hour_days=90, day_days=None))
    recorder = HistoryRecorder(store, clock=Clock(T0 + 400 * DAY))
    for days_back in (0, 8, 100):
        at = T0 + 365 * DAY - days_back * DAY
        recorder.add("Volvo", record("positive", at), "positive", True)
    recorder.flush()  # the first flush also sweeps
    newest = T0 + 365 * DAY
    minutes = store.series(["Volvo"], newest - 9 * DAY, newest + MINUTE, step=HOUR)
    assert sum(minutes["entities"]["Volvo"]["positive"]) == 2  # 0 and 8 days back: hours kept
    raw = store.db.query("SELECT COUNT(*) FROM history_minute")[0][0]
    assert raw == 1  # only the newest minute row is within 7 days
    days = store.series(["Volvo"], newest - 101 * DAY, newest + DAY, step=DAY)
    assert sum(days["entities"]["Volvo"]["positive"]) == 3
    assert store.pick_step(newest - HOUR, newest) == MINUTE
    assert store.pick_step(newest - 8 * DAY, newest - 7.5 * DAY) == HOUR  # minutes are gone
    assert store.pick_step(newest - 100 * DAY, newest) == DAY
    store.close()


def test_event_time_prefers_created_at_and_distrusts_impossible_times():
    now = T0 + 10 * DAY
    assert event_time({"created_at": "2026-01-01T00:00:30Z"}, now) == (T0 + 30, True)
    assert event_time({"created_at": (T0 + 5) * 1000}, now) == (T0 + 5, True)
    assert event_time({"timestamp": "2026-01-02T00:00:00.000Z"}, now) == (T0 + DAY, True)
    assert event_time({}, now) == (now, True)
    # Far future, before Twitter, not a time at all: the receipt time, flagged.
    assert event_time({"created_at": (now + DAY) * 1000}, now) == (now, False)
    assert event_time({"timestamp": "1971-01-01T00:00:00Z"}, now) == (now, False)
    assert event_time({"created_at": "yesterday"}, now) == (now, False)
    assert event_time({"created_at": True}, now) == (now, False)
    assert parse_time("2026-01-01T00:00:00") == T0  # naive: UTC
    assert parse_time(float("nan")) is None and parse_time("9" * 50) is None


def test_records_with_untrusted_times_are_bucketed_at_receipt_and_counted(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    recorder = HistoryRecorder(store, clock=Clock(T0 + HOUR))
    recorder.add("Volvo", {"timestamp": "2099-01-01T00:00:00Z"}, "negative", True)
    recorder.flush()
    assert recorder.untrusted_times == 1
    assert store.newest() == T0 + HOUR


def test_retention_parse():
    assert Retention.parse("minute=2d,hour=48h,day=forever") == Retention(2, 2, None)
    assert Retention.parse("") == Retention()
    for bad in ("week=1d", "minute=7", "minute=-1d", "hour=xd"):
        with pytest.raises(ValueError, match="retention"):
            Retention.parse(bad)


def test_a_failed_flush_keeps_its_counts_for_the_next_one(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    recorder = HistoryRecorder(store, clock=Clock(T0))
    blocker = HistoryStore(path)  # another writer holding the file's write lock
    blocker.db._db.execute("BEGIN IMMEDIATE")
    blocker.db._db.execute("PRAGMA busy_timeout=0")
    store.db._db.execute("PRAGMA busy_timeout=0")
    recorder.add("Volvo", record("negative", T0), "negative", True)
    assert recorder.flush() == 0 and recorder.pending() == 1
    assert "locked" in (recorder.last_error or "")
    blocker.db._db.execute("ROLLBACK")
    assert recorder.flush() == 1 and recorder.pending() == 0
    assert store.totals(None, T0, T0 + MINUTE)["entities"]["Volvo"]["negative"] == 1


def test_unusable_databases_fail_with_one_clear_line(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(HistoryDatabaseError, match=r"dir\.sqlite3"):
        HistoryStore(tmp_path / "dir.sqlite3")
    with pytest.raises(HistoryDatabaseError, match="cannot connect"):
        HistoryStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    (tmp_path / "json.sqlite3").write_text(json.dumps({"not": "sqlite"}))
    with pytest.raises(HistoryDatabaseError, match=r"json\.sqlite3"):
        HistoryStore(tmp_path / "json.sqlite3")


GRAFANA = Path(__file__).resolve().parents[1] / "dashboard" / "grafana" / "repedge-history.json"
GROUP = re.compile(r"\$__unixEpochGroupAlias\((\w+), '(\d+)([hd])'\)")


def grafana_sql(sql: str, start: int, end: int, entities: list[str]) -> str:
    """Expand the Grafana macros the dashboard uses, as Grafana's PostgreSQL source does."""

    def group(m: re.Match) -> str:
        seconds = int(m.group(2)) * (3600 if m.group(3) == "h" else 86400)
        return f'floor({m.group(1)}/{seconds})*{seconds} AS "time"'

    sql = GROUP.sub(group, sql)
    sql = re.sub(r"\$__unixEpochFilter\((\w+)\)", rf"\1 >= {start} AND \1 <= {end}", sql)
    sql = sql.replace("$entity", ", ".join(f"'{e}'" for e in entities))
    assert "$" not in sql, sql
    return sql


def test_grafana_history_dashboard_queries_run_on_postgresql(pg_server):
    import psycopg

    board = json.loads(GRAFANA.read_text())
    assert board["__inputs"][0]["pluginId"] == "grafana-postgresql-datasource"
    targets = [t for p in board["panels"] for t in p["targets"]]
    assert len(targets) == 5
    url = fresh_postgres_db(pg_server)
    store = HistoryStore(url)
    recorder = HistoryRecorder(store, clock=Clock(T0 + 2 * DAY))
    for label, related, n in [("negative", True, 3), ("positive", True, 1), ("neutral", False, 4)]:
        for i in range(n):
            recorder.add("Kia", record(label, T0 + 3600 + i), label, related)
    recorder.add("BMW", record("positive", T0 + 7200), "positive", None)
    recorder.flush()
    store.close()
    with psycopg.connect(url) as conn:
        variable = board["templating"]["list"][0]["query"]
        assert [r[0] for r in conn.execute(variable)] == ["Kia", "BMW"]
        results = {}
        for panel in board["panels"]:
            sql = grafana_sql(panel["targets"][0]["rawSql"], T0, T0 + DAY, ["Kia", "BMW"])
            results[panel["id"]] = conn.execute(sql).fetchall()

    def points(rows):
        return [(int(t.timestamp()), e, round(v)) for t, e, v in rows]

    assert (T0 + 3600, "Kia", 75) in points(results[1])
    assert points(results[2]) == [(T0 + 3600, "Kia", 4), (T0 + 7200, "BMW", 1)]
    assert points(results[3]) == [(T0, "BMW", 0), (T0, "Kia", 75)] or points(results[3]) == [
        (T0, "Kia", 75),
        (T0, "BMW", 0),
    ]
    kia = next(row for row in results[5] if row[0] == "Kia")
    assert (int(kia[1]), float(kia[2]), float(kia[4]), int(kia[5])) == (4, 75.0, 25.0, 4)


SCHEMA_1 = """
CREATE TABLE history_meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO history_meta VALUES ('schema', '1');
""" + "".join(
    f"""
CREATE TABLE {t} (entity TEXT NOT NULL, bucket BIGINT NOT NULL, label TEXT NOT NULL,
    relation TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (entity, bucket, label, relation));
CREATE INDEX {t}_bucket ON {t} (bucket);
INSERT INTO {t} VALUES ('Kia', {T0}, 'negative', 'related', 3);
INSERT INTO {t} VALUES ('Kia', {T0}, 'positive', 'unrelated', 2);
INSERT INTO {t} VALUES ('Kia', {T0}, 'neutral', 'unknown', 1);"""
    for t in ("history_minute", "history_hour", "history_day")
)


def test_a_database_of_an_earlier_schema_is_rebuilt_keeping_its_counts(db):
    conn = connect(db)  # only a connection, to write the old layout
    conn.run(SCHEMA_1.strip().rstrip(";"))
    conn.close()
    store = HistoryStore(db)
    assert store.totals(["Kia"], T0, T0 + MINUTE)["entities"]["Kia"] == {
        "negative": 3, "neutral": 1, "positive": 0, "other": 0, "unrelated": 2
    }  # fmt: skip
    assert store.series(["Kia"], T0, T0 + DAY, step=DAY)["entities"]["Kia"]["unrelated"] == [2]
    recorder = HistoryRecorder(store, clock=Clock(T0 + HOUR))
    recorder.add("Kia", record("negative", T0), "negative", True)
    recorder.flush()
    assert store.entities() == {"Kia": 7}
    store.close()
    assert HistoryStore(db).entities() == {"Kia": 7}  # and opens again as it is
