"""Records already produced, by tweet id, so that a redelivered tweet gets the same record.

MQTT QoS 1 delivers at least once: after a crash, a reconnect or a model swap the broker
hands the node tweets it has already labelled. The node writes each record here before
publishing it and republishes the stored text verbatim for a known id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

DEFAULT_MAX_RECORDS = 200_000
# Prune in chunks rather than on every insert.
_PRUNE_SLACK = 0.1


class RecordStore:
    """SQLite map ``id -> (topic, record JSON)``, oldest entries pruned beyond a bound."""

    def __init__(self, path: Path, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.max_records = max_records
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: a committed batch survives a process crash (kill -9); only a power
        # cut can drop the last transactions, for tweets that are then redelivered anyway.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        self._count = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def get(self, tweet_id: str) -> tuple[str, str] | None:
        return self.get_many([tweet_id]).get(tweet_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Stored ``(topic, payload)`` for those of ``ids`` that have a record."""
        with self._lock:
            return self._select(list(set(ids)))

    def _select(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, topic, payload FROM records WHERE id IN ({marks})"
            for tweet_id, topic, payload in self._db.execute(query, chunk):
                found[tweet_id] = (topic, payload)
        return found

    def put_if_absent(self, items: Iterable[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
        """Store ``(id, topic, payload)`` items in one transaction, keeping earlier records.

        Returns what is stored for each id afterwards: the new record, or the one an
        earlier delivery of the same id produced.
        """
        first: dict[str, tuple[str, str]] = {}
        for tweet_id, topic, payload in items:
            first.setdefault(tweet_id, (topic, payload))
        if not first:
            return {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO records (id, topic, payload) VALUES (?, ?, ?)",
                    ((i, t, p) for i, (t, p) in first.items()),
                )
                inserted = self._db.total_changes - before
                # Only when some ids were already there does the answer differ from `first`.
                stored = first if inserted == len(first) else {**first, **self._select(list(first))}
                count = self._count + inserted
                if count > self.max_records * (1 + _PRUNE_SLACK):
                    self._db.execute(
                        "DELETE FROM records WHERE seq IN"
                        " (SELECT seq FROM records ORDER BY seq LIMIT ?)",
                        (count - self.max_records,),
                    )
                    count = self.max_records
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count = count
        return stored

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()
