"""Reputation history that persists: per-minute counts per entity and label, rolled up.

What is stored. One row per (entity, bucket) in three tables of the same shape:
``history_minute``, ``history_hour`` and ``history_day`` (``bucket``: the bucket's start,
epoch seconds UTC), with a count column per label and relation, ``<label>_<relation>``:
label negative / neutral / positive / other (anything else), relation ``related``,
``unrelated``, or ``unknown`` for records without a ``related`` field (a model with no
related head). Twelve columns, so a range query reads one row per bucket and needs no
GROUP BY. Shares are computed on the tweets not marked unrelated (related + unknown);
unrelated ones are counted apart.

How it is written. :class:`HistoryRecorder` adds each label record to a dict in memory
(O(1), under a lock) and a thread flushes it every ``flush_interval`` seconds in ONE
transaction that upserts the same increments into all three tables: the roll-up to
hours and days happens at write time, so no job has to catch up after a restart, and
the coarse tables are exact. After a ``kill -9`` the database holds every count up to the
last flush; the counts of at most one interval are lost (docs/dashboard.md).

Retention (:class:`Retention`): minute rows 7 days, hour rows 90 days, day rows forever,
each counted back from the newest minute recorded (so a replayed month of old tweets
keeps its own last week at minute resolution). The sweep runs at most once an hour.

Which time. A record is bucketed by its event time, ``created_at`` (ISO 8601 or epoch
milliseconds) when present, else its ``timestamp`` (when the node labelled it), else the
time the dashboard received it. A time before Twitter existed or more than
:data:`FUTURE_SLACK_S` ahead of the dashboard's clock is not believed: such a record is
bucketed at its receipt time and counted in ``HistoryRecorder.untrusted_times``.

Reading it (what the views and the alerts use):

* :meth:`HistoryStore.series` -> per-entity counts on a dense time axis (minute, hour or
  day buckets), for charts and change detection;
* :meth:`HistoryStore.totals` -> per-entity sums over a range (tables, ``dashboard top``);
* :meth:`HistoryStore.entities` -> every entity with its all-time count.

SQLite (a file, the default) and PostgreSQL (``postgresql://...``) run the same SQL;
:mod:`dashboard.history_sql` holds the two adapters.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dashboard.history_sql import Dialect, HistoryDatabaseError, connect

log = logging.getLogger("repedge.dashboard")

MINUTE, HOUR, DAY = 60, 3600, 86400
TABLES = {MINUTE: "history_minute", HOUR: "history_hour", DAY: "history_day"}
LABELS = ("negative", "neutral", "positive", "other")
RELATIONS = ("related", "unrelated", "unknown")
FIELDS = (*LABELS, "unrelated")  # what each bucket of a series carries
TWITTER_EPOCH_S = 1_142_899_200  # 2006-03-21: no tweet is older
FUTURE_SLACK_S = 300.0  # clocks disagree a little; minutes ahead is a broken clock
MAX_POINTS = 5000  # per series; a longer axis moves to the next coarser bucket
COLUMNS = tuple(f"{label}_{relation}" for label in LABELS for relation in RELATIONS)
SCHEMA_VERSION = "3"

__all__ = [
    "DAY",
    "FIELDS",
    "HOUR",
    "MINUTE",
    "HistoryDatabaseError",
    "HistoryRecorder",
    "HistoryStore",
    "Retention",
    "default_db_path",
    "event_time",
]


def default_db_path() -> Path:
    """``$XDG_STATE_HOME/repedge/history.sqlite3`` (``~/.local/state/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "repedge" / "history.sqlite3"


@dataclass(frozen=True)
class Retention:
    """Days each resolution is kept behind the newest minute; None keeps it forever."""

    minute_days: float | None = 7
    hour_days: float | None = 90
    day_days: float | None = None

    def horizon(self, step: int, newest: int) -> int | None:
        days = {MINUTE: self.minute_days, HOUR: self.hour_days, DAY: self.day_days}[step]
        return None if days is None else int(newest - days * DAY)

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``minute=7d,hour=90d,day=forever`` (any subset; units d or h)."""
        values: dict[str, float | None] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key, value = key.strip(), value.strip().lower()
            if key not in ("minute", "hour", "day"):
                raise ValueError(f"retention: unknown resolution {key!r} (minute, hour, day)")
            if value in ("forever", "inf", "none"):
                values[f"{key}_days"] = None
                continue
            unit = value[-1:]
            try:
                amount = float(value[:-1]) / (24 if unit == "h" else 1)
            except ValueError:
                amount = math.nan
            if unit not in ("d", "h") or not amount > 0:
                raise ValueError(f"retention: {part!r} is not like minute=7d or hour=48h")
            values[f"{key}_days"] = amount
        return cls(**values)


# -- event time -----------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """Epoch seconds from ISO 8601 text (naive means UTC) or epoch milliseconds; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000
        return seconds if math.isfinite(seconds) else None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError):
        return None


def event_time(record: dict[str, Any], received: float) -> tuple[float, bool]:
    """(when the tweet happened, whether that time was believed) for a label record."""
    for key in ("created_at", "timestamp"):
        if key in record:
            when = parse_time(record[key])
            if when is not None and TWITTER_EPOCH_S <= when <= received + FUTURE_SLACK_S:
                return when, True
            if when is not None or key == "created_at":
                return received, False
    return received, True


# -- the store ------------------------------------------------------------------------------


META = "CREATE TABLE IF NOT EXISTS history_meta (key TEXT PRIMARY KEY, value TEXT)"


def _tables(suffix: str) -> str:
    """The three tables; ``suffix`` is the dialect's (SQLite: WITHOUT ROWID, which keeps
    one entity's buckets together on disk, so a range is a few pages, not one per row).
    The second index serves retention (bucket <) and all-entity ranges; with the entity in
    it, PostgreSQL filters a brand list without visiting the other brands' rows."""
    counts = "".join(f"    {column} BIGINT NOT NULL DEFAULT 0,\n" for column in COLUMNS)
    return "".join(
        f"""
CREATE TABLE {table} (
    entity TEXT NOT NULL,
    bucket BIGINT NOT NULL,
{counts}    PRIMARY KEY (entity, bucket)
){suffix};
CREATE INDEX {table}_bucket ON {table} (bucket, entity);"""
        for table in TABLES.values()
    )


def _migration(old: str, suffix: str) -> str:
    """SQL that rebuilds the tables of an earlier development schema (1: one row per label
    and relation; 2: a rowid table) as the current one, keeping every count."""
    steps = []
    for table in TABLES.values():
        steps += [
            f"DROP INDEX IF EXISTS {table}_bucket",
            f"ALTER TABLE {table} RENAME TO {table}_old",
        ]
    steps.append(_tables(suffix).strip().rstrip(";"))
    for table in TABLES.values():
        if old == "1":
            sums = ", ".join(
                f"SUM(CASE WHEN label || '_' || relation = '{c}' THEN n ELSE 0 END)"
                for c in COLUMNS
            )
            select = f"SELECT entity, bucket, {sums} FROM {table}_old GROUP BY entity, bucket"
        else:
            select = f"SELECT entity, bucket, {', '.join(COLUMNS)} FROM {table}_old"
        steps += [
            f"INSERT INTO {table} (entity, bucket, {', '.join(COLUMNS)}) {select}",
            f"DROP TABLE {table}_old",
        ]
    steps.append(f"UPDATE history_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema'")
    return ";\n".join(steps)


def _upsert(table: str) -> str:
    marks = ", ".join("?" for _ in COLUMNS)
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COLUMNS)
    return (
        f"INSERT INTO {table} (entity, bucket, {', '.join(COLUMNS)}) VALUES (?, ?, {marks}) "
        f"ON CONFLICT (entity, bucket) DO UPDATE SET {adds}"
    )


# What a bucket carries (FIELDS), as SQL over its columns: each label's tweets not marked
# unrelated, and every unrelated one.
_FIELD_SQL = [f"{label}_related + {label}_unknown" for label in LABELS] + [
    " + ".join(f"{label}_unrelated" for label in LABELS)
]
_ALL_SQL = " + ".join(COLUMNS)
_INDEX = {column: i for i, column in enumerate(COLUMNS)}

Key = tuple[str, int, str, str]  # entity, minute bucket, label, relation


class HistoryStore:
    """Counts per entity, bucket, label and relation in SQLite or PostgreSQL."""

    def __init__(self, db: str | Path, retention: Retention | None = None) -> None:
        self.retention = retention or Retention()
        self.db: Dialect = connect(db)
        self.where = self.db.where
        self._prepare()
        self._newest = self._read_newest()
        self._swept_at = -math.inf

    @property
    def kind(self) -> str:
        return self.db.name

    def _prepare(self) -> None:
        """Create the tables, or bring an earlier schema's up to date; refuse a newer one."""
        suffix = self.db.table_suffix
        self.db.run(META)
        rows = self.db.query("SELECT value FROM history_meta WHERE key = 'schema'")
        found = rows[0][0] if rows else None
        if found is None:
            self.db.run(
                _tables(suffix)
                + f"\nINSERT INTO history_meta (key, value) VALUES ('schema', '{SCHEMA_VERSION}')"
            )
        elif found in ("1", "2"):
            log.warning("history: %s holds schema %s; rebuilding it as %s", self.where, found,
                        SCHEMA_VERSION)  # fmt: skip
            self.db.run(_migration(found, suffix))
        elif found != SCHEMA_VERSION:
            raise HistoryDatabaseError(
                f"{self.where} holds history schema {found}, this dashboard reads "
                f"{SCHEMA_VERSION}; use another --db"
            )

    def claim_writer(self) -> bool:
        """Whether this process may record (one recorder per database, never two)."""
        return self.db.claim_writer()

    def close(self) -> None:
        self.db.close()

    def _read_newest(self) -> int | None:
        rows = self.db.query(f"SELECT MAX(bucket) FROM {TABLES[MINUTE]}")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def newest(self) -> int | None:
        """Start of the newest minute recorded (epoch s), or None for an empty store."""
        return self._newest

    def write(self, counts: dict[Key, int]) -> None:
        """Add per-minute counts to the minute, hour and day tables in one transaction."""
        if not counts:
            return
        per_table: dict[int, dict[tuple[str, int], list[int]]] = {step: {} for step in TABLES}
        for (entity, minute, label, relation), n in counts.items():
            column = _INDEX[f"{label}_{relation}"]
            for step, rolled in per_table.items():
                key = (entity, minute - minute % step)
                row = rolled.get(key)
                if row is None:
                    row = rolled[key] = [0] * len(COLUMNS)
                row[column] += n
        self.db.write_many(
            [
                (_upsert(TABLES[step]), [(*key, *row) for key, row in rolled.items()])
                for step, rolled in per_table.items()
            ]
        )
        newest = max(key[1] for key in counts)
        self._newest = newest if self._newest is None else max(self._newest, newest)

    def sweep(self, now: float | None = None, every_s: float = HOUR) -> int:
        """Apply the retention policy (at most once per ``every_s``); rows deleted."""
        now = time.monotonic() if now is None else now
        if self._newest is None or now - self._swept_at < every_s:
            return 0
        self._swept_at = now
        deletes = []
        for step, table in TABLES.items():
            horizon = self.retention.horizon(step, self._newest)
            if horizon is not None:
                deletes.append((f"DELETE FROM {table} WHERE bucket < ?", [(horizon,)]))
        before = self.count_rows()
        self.db.write_many(deletes)
        return before - self.count_rows()

    def count_rows(self) -> int:
        return sum(int(self.db.query(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES.values())

    # -- queries ----------------------------------------------------------------------------

    def pick_step(self, start: float, end: float, finest: int = MINUTE) -> int:
        """The finest bucket that the range's points fit and the retention still holds."""
        for step in (MINUTE, HOUR, DAY):
            if step < finest or (end - start) / step > MAX_POINTS:
                continue
            horizon = self.retention.horizon(step, self._newest or int(end))
            if horizon is None or start >= horizon or step == DAY:
                return step
        return DAY

    def _where(self, entities: Sequence[str] | None, start: int, end: int) -> tuple[str, list]:
        params: list[Any] = [start, end]
        clause = "bucket >= ? AND bucket < ?"
        if entities is not None:
            clause += f" AND entity IN ({', '.join('?' for _ in entities)})"
            params += list(entities)
        return clause, params

    def series(
        self,
        entities: Sequence[str] | None,
        start: float,
        end: float,
        step: int | None = None,
    ) -> dict[str, Any]:
        """Per-entity counts per bucket over [start, end) on a dense axis.

        Returns ``{"step", "start", "end", "t": [bucket starts], "entities": {name:
        {"negative": [...], "neutral", "positive", "other", "unrelated"}}}``; label counts
        are of tweets not marked unrelated. ``entities`` None means all of them; ``step``
        None picks one (:meth:`pick_step`).
        """
        step = step or self.pick_step(start, end)
        if step not in TABLES:
            raise ValueError(f"step must be one of {sorted(TABLES)}")
        first, stop = int(start) - int(start) % step, math.ceil(end)
        axis = list(range(first, stop, step))
        result: dict[str, Any] = {"step": step, "start": first, "end": stop, "t": axis}
        result["entities"] = {}
        if entities is not None and not entities:
            return result
        clause, params = self._where(entities, first, stop)
        rows = self.db.query(
            f"SELECT entity, bucket, {', '.join(_FIELD_SQL)} FROM {TABLES[step]} WHERE {clause}",
            params,
        )
        size = len(axis)
        out: dict[str, dict[str, list[int]]] = {}
        lists: dict[str, tuple[list[int], ...]] = {}  # the same lists, in FIELDS order

        def add(name: str) -> tuple[list[int], ...]:
            out[name] = {f: [0] * size for f in FIELDS}
            lists[name] = tuple(out[name][f] for f in FIELDS)
            return lists[name]

        for name in entities or ():
            add(name)
        # Sums of BIGINT columns: ints from both databases, so no conversion per value.
        for entity, bucket, neg, neu, pos, other, unrelated in rows:
            i = (bucket - first) // step
            if 0 <= i < size:
                columns = lists.get(entity) or add(entity)
                columns[0][i], columns[1][i], columns[2][i] = neg, neu, pos
                columns[3][i], columns[4][i] = other, unrelated
        result["entities"] = out
        return result

    def totals(self, entities: Sequence[str] | None, start: float, end: float) -> dict[str, Any]:
        """Per-entity sums over [start, end), in whole buckets of the coarsest fitting table.

        Returns ``{"step", "start", "end", "entities": {name: {label: n, ..., "unrelated": n}}}``.
        """
        span = end - start
        finest = MINUTE if span <= 6 * HOUR else HOUR if span <= 92 * DAY else DAY
        step = self.pick_step(start, end, finest)
        first = int(start) - int(start) % step
        clause, params = self._where(entities, first, math.ceil(end))
        sums = ", ".join(f"SUM({field})" for field in _FIELD_SQL)
        rows = self.db.query(
            f"SELECT entity, {sums} FROM {TABLES[step]} WHERE {clause} GROUP BY entity", params
        )
        found = {e: dict(zip(FIELDS, map(int, sums), strict=True)) for e, *sums in rows}
        return {"step": step, "start": first, "end": math.ceil(end), "entities": found}

    def entities(self) -> dict[str, int]:
        """Every entity recorded (within the day table) with its total count, busiest first."""
        rows = self.db.query(
            f"SELECT entity, SUM({_ALL_SQL}) AS n FROM {TABLES[DAY]} GROUP BY entity "
            "ORDER BY n DESC"
        )
        return {entity: int(n) for entity, n in rows}


# -- the recorder ---------------------------------------------------------------------------


class HistoryRecorder:
    """Counts label records in memory and flushes them to a store every few seconds.

    :meth:`add` is called by the dashboard's ingest (paho's thread) and costs a dict
    update. A failed flush keeps its counts and retries at the next interval, so a
    database that is briefly away loses nothing while the process lives.
    """

    def __init__(
        self,
        store: HistoryStore,
        flush_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.clock = clock
        self.untrusted_times = 0  # records whose own time was not believed
        self.flushes = 0
        self.recorded = 0  # counts written to the database
        self.last_flush: float | None = None
        self.last_error: str | None = None
        self._pending: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-flush", daemon=True)

    def add(self, entity: str, record: dict[str, Any], label: str, related: bool | None) -> None:
        """Count one label record (``label`` already reduced to a known label or other)."""
        when, believed = event_time(record, self.clock())
        relation = "unknown" if related is None else "related" if related else "unrelated"
        key = (entity, int(when // MINUTE) * MINUTE, label, relation)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            if not believed:
                self.untrusted_times += 1

    def add_counts(self, counts: Iterable[tuple[Key, int]]) -> None:
        """Counts already bucketed by minute (bulk loads, benchmarks)."""
        with self._lock:
            for key, n in counts:
                self._pending[key] = self._pending.get(key, 0) + n

    def pending(self) -> int:
        with self._lock:
            return sum(self._pending.values())

    def flush(self) -> int:
        """Write what is pending now; returns the count written (0 on failure, kept)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                self.store.write(batch)
            except HistoryDatabaseError as exc:
                with self._lock:  # put it back: the next flush tries again
                    for key, n in batch.items():
                        self._pending[key] = self._pending.get(key, 0) + n
                if self.last_error != str(exc):
                    log.error("history not written (will retry): %s", exc)
                self.last_error = str(exc)
                return 0
            written = sum(batch.values())
            self.recorded += written
            self.flushes += 1
            self.last_flush = self.clock()
            self.last_error = None
            try:
                self.store.sweep()
            except HistoryDatabaseError as exc:
                log.error("history retention sweep failed: %s", exc)
            return written

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left (a clean stop loses nothing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # the recorder must outlive any one batch
                log.exception("history flush failed")

    def status(self) -> dict[str, Any]:
        return {
            "db": self.store.kind,
            "where": self.store.where,
            "flush_interval_s": self.flush_interval,
            "pending": self.pending(),
            "recorded": self.recorded,
            "flushes": self.flushes,
            "last_flush": self.last_flush,
            "last_error": self.last_error,
            "untrusted_times": self.untrusted_times,
            "newest": self.store.newest(),
        }
