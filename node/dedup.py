"""Records already produced, so that a redelivered tweet gets the same record again.

MQTT QoS 1 delivers at least once: after a crash, a reconnect or a model swap the broker
hands the node tweets it has already labelled. The node writes each record here before
publishing it and republishes the stored text verbatim when the same tweet comes back.

"The same tweet" is its id *and* a digest of its content (text and entity): a tweet that
reuses an id with other content is a different tweet and is labelled afresh. Keying on the
id alone would hand it the stored record of another text: a wrong label, delivered
silently (issue 11, item 5).

Schema (``PRAGMA user_version`` 3)::

    records(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, digest TEXT,
            topic TEXT, payload TEXT, UNIQUE(id, digest))

The digest is :func:`node.messages.content_id`. Older store files are migrated in place
when they are opened, their rows kept with digest NULL: version 1 had no digest, and
version 2's digest joined text and entity with U+001F, which two different tweets could
share (issue 20 item 6). Rows with a NULL digest answer nothing and are pruned with age
like any other row, so a tweet labelled before the upgrade and redelivered after it is
labelled afresh (a second record for it, as in the at-least-once case), never given
another tweet's record.

:class:`ResilientStore` wraps the store for the node: it never raises. When SQLite fails
(a full disk, a file that cannot be opened), the node keeps labelling without the store,
reports ``record_store: "degraded: <reason>"`` in telemetry, and tries the store again
every ``retry_s`` seconds until it works.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("repedge.node")

DEFAULT_MAX_RECORDS = 200_000
DEFAULT_RETRY_S = 30.0
SCHEMA_VERSION = 3
# Prune in chunks rather than on every insert.
_PRUNE_SLACK = 0.1
# SQLite caps the number of parameters per statement.
_CHUNK = 500

Key = tuple[str, str]  # (tweet id, content digest)
Stored = tuple[str, str]  # (topic, payload)

_CREATE = (
    "CREATE TABLE IF NOT EXISTS records ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL, digest TEXT, topic TEXT NOT NULL, payload TEXT NOT NULL,"
    " UNIQUE (id, digest))"
)


class RecordStore:
    """SQLite map ``(id, digest) -> (topic, record JSON)``, oldest pruned beyond a bound."""

    def __init__(self, path: Path, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.max_records = max_records
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            # WAL + NORMAL: a committed batch survives a process crash (kill -9); only a
            # power cut can drop the last transactions, whose tweets are then redelivered.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._count = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path} has schema {version}; this node knows up to {SCHEMA_VERSION}"
            )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
            if columns and "digest" not in columns:
                log.info("migrating record store %s to schema %d", self.path, SCHEMA_VERSION)
                self._db.execute("ALTER TABLE records RENAME TO records_v1")
                self._db.execute(_CREATE)
                self._db.execute(
                    "INSERT INTO records (seq, id, digest, topic, payload)"
                    " SELECT seq, id, NULL, topic, payload FROM records_v1"
                )
                self._db.execute("DROP TABLE records_v1")
            elif columns:
                # Version 2 digests used the collision-prone encoding: forget them.
                log.info("migrating record store %s to schema %d", self.path, SCHEMA_VERSION)
                self._db.execute("UPDATE records SET digest = NULL")
            else:
                self._db.execute(_CREATE)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def lookup(self, keys: Iterable[Key]) -> tuple[dict[Key, Stored], set[str]]:
        """Stored records for those ``keys`` that have one, and the ids among the others
        that are stored with other content (an id reused for another tweet)."""
        wanted = set(keys)
        if not wanted:
            return {}, set()
        ids = sorted({tweet_id for tweet_id, _ in wanted})
        found: dict[Key, Stored] = {}
        other_content: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, digest, topic, payload FROM records WHERE id IN ({marks})"
                for tweet_id, digest, topic, payload in self._db.execute(query, chunk):
                    if (tweet_id, digest) in wanted:
                        found[(tweet_id, digest)] = (topic, payload)
                    elif digest is not None:
                        other_content.add(tweet_id)
        reused = {i for i in other_content if not any(k[0] == i for k in found)}
        return found, reused

    def get(self, tweet_id: str, digest: str) -> Stored | None:
        return self.lookup([(tweet_id, digest)])[0].get((tweet_id, digest))

    def put_if_absent(self, items: Iterable[tuple[str, str, str, str]]) -> dict[Key, Stored]:
        """Store ``(id, digest, topic, payload)`` items in one transaction, keeping earlier
        records. Returns what is stored for each key afterwards: the new record, or the one
        an earlier delivery of the same tweet produced."""
        first: dict[Key, Stored] = {}
        for tweet_id, digest, topic, payload in items:
            first.setdefault((tweet_id, digest), (topic, payload))
        if not first:
            return {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO records (id, digest, topic, payload)"
                    " VALUES (?, ?, ?, ?)",
                    ((i, d, t, p) for (i, d), (t, p) in first.items()),
                )
                inserted = self._db.total_changes - before
                stored = first
                if inserted != len(first):  # some were there already: read them back
                    stored = {**first, **self._select_keys(list(first))}
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
                # (SQLite may have ended the transaction itself: nothing to roll back.)
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._count = count
        return stored

    def _select_keys(self, keys: list[Key]) -> dict[Key, Stored]:
        found: dict[Key, Stored] = {}
        for start in range(0, len(keys), _CHUNK // 2):
            chunk = keys[start : start + _CHUNK // 2]
            where = " OR ".join(["(id = ? AND digest = ?)"] * len(chunk))
            params = [x for key in chunk for x in key]
            query = f"SELECT id, digest, topic, payload FROM records WHERE {where}"
            for tweet_id, digest, topic, payload in self._db.execute(query, params):
                found[(tweet_id, digest)] = (topic, payload)
        return found

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _is_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class ResilientStore:
    """The record store as the node uses it: never raises, degrades and recovers.

    While degraded, lookups find nothing and writes are skipped, so tweets are labelled
    and published without deduplication (a redelivered tweet may get a record with
    another timestamp; never no record). Every ``retry_s`` seconds the next batch tries
    the store again. A full disk keeps the open connection (space may come back); any
    other failure reopens the file on the next try.
    """

    def __init__(
        self,
        open_store: Callable[[], RecordStore],
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_store = open_store
        self.retry_s = retry_s
        self._clock = clock
        self._store: RecordStore | None = None
        self._reason: str | None = None  # why it is degraded; None: ok (or not opened yet)
        self._retry_at = 0.0
        self.failures = 0
        self.unstored = 0  # records published while the store was unavailable
        self._lock = threading.Lock()

    @classmethod
    def at(cls, path: Path, max_records: int = DEFAULT_MAX_RECORDS, **kwargs) -> ResilientStore:
        return cls(lambda: RecordStore(path, max_records), **kwargs)

    @property
    def status(self) -> str:
        """ "ok", or "degraded: <reason>"."""
        reason = self._reason
        return "ok" if reason is None else f"degraded: {reason}"

    @property
    def healthy(self) -> bool:
        return self._reason is None

    @property
    def store(self) -> RecordStore | None:
        """The open SQLite store, if any (tests reach its connection through this)."""
        return self._store

    def open(self) -> bool:
        """Open the store now (at start); False, and degraded, if it cannot be opened."""
        with self._lock:
            return self._available()

    def _available(self) -> bool:
        if self._reason is None and self._store is not None:
            return True
        if self._clock() < self._retry_at:
            return False
        if self._store is None:
            try:
                self._store = self._open_store()
            except Exception as exc:
                self._fail("open", exc)
                return False
            if self._reason is not None and self._reason.startswith("open:"):
                self._ok()
        return True  # try it; the operation itself says whether it is back

    def _fail(self, what: str, exc: BaseException) -> None:
        reason = f"{what}: {type(exc).__name__}: {exc}"
        if self._reason is None:
            log.error("record store unavailable (%s); labelling without it", reason)
        self._reason = reason
        self.failures += 1
        self._retry_at = self._clock() + self.retry_s
        if self._store is not None and not _is_full(exc):
            store, self._store = self._store, None
            with contextlib.suppress(Exception):
                store.close()

    def _ok(self) -> None:
        if self._reason is not None:
            log.warning("record store is back (%s)", self._store.path if self._store else "")
        self._reason = None

    def lookup(self, keys: Iterable[Key]) -> tuple[dict[Key, Stored], set[str]]:
        keys = list(keys)
        with self._lock:
            if not keys or not self._available():
                return {}, set()
            assert self._store is not None
            try:
                return self._store.lookup(keys)
            except Exception as exc:
                self._fail("read", exc)
                return {}, set()

    def put_if_absent(self, items: Iterable[tuple[str, str, str, str]]) -> dict[Key, Stored]:
        items = list(items)
        first: dict[Key, Stored] = {}
        for tweet_id, digest, topic, payload in items:
            first.setdefault((tweet_id, digest), (topic, payload))
        with self._lock:
            if not items:
                return {}
            if self._available():
                assert self._store is not None
                try:
                    stored = self._store.put_if_absent(items)
                except Exception as exc:
                    self._fail("write", exc)
                else:
                    self._ok()
                    return stored
            self.unstored += len(first)
            return first

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
