"""What a node keeps for teaching: recent texts per entity, and the labels a user gave.

One SQLite file in the node's state folder (``STATE_DIR/teach.sqlite``), two tables:

* ``texts``: the most recent ``max_per_entity`` tweets the node labelled per entity, with
  the model's answer (label, scores, related score), the pooled ``embedding`` (float16)
  that the active-learning selector measures diversity on, and the tweet's time ``at``
  (epoch seconds): its own ``created_at`` when it carried a valid one, else when the node
  labelled it, the time the dashboard's history buckets it by, so a click on a point
  lists the texts behind it (:meth:`TeachStore.texts_between`). Older ones are deleted as
  new ones arrive; tweets without an entity are not kept (teaching is per brand).
* ``answers``: what a user answered for a tweet (negative / neutral / positive /
  unrelated, or skip), with the tweet's text and the model's guess at the time. Kept until
  purged: they are the user's work, and the data a head is fitted on.

Both are keyed by (entity, digest of the text), so a retweet or a redelivered tweet is
kept once and an imported label set dedupes against what is there.

Writing texts happens off the inference thread (:class:`TextKeeper`): a bounded queue
and a writer thread, so a slow or failing disk costs texts, never labels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.timestamps import parse_wire, utc_now
from edgemodel.entity_heads import entity_key

log = logging.getLogger("repedge.node")

TEACH_DB = "teach.sqlite"
# Texts kept per entity. 2,000 is a pool the selector can choose 200 labels from with
# room to spare (the teach curve reaches its plateau by 200), about two days of a busy
# brand's tweets, ~3 MB on disk per entity; memory does not grow with it (SQLite's page
# cache is bounded). 0 keeps nothing.
DEFAULT_TEXTS_PER_ENTITY = 2000
DEFAULT_QUEUE = 1024
POLARITIES = ("negative", "neutral", "positive")
ANSWERS = (*POLARITIES, "unrelated", "skip")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS texts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_key TEXT NOT NULL,
    entity TEXT NOT NULL,
    digest TEXT NOT NULL,
    tweet_id TEXT NOT NULL,
    text TEXT NOT NULL,
    label TEXT NOT NULL,
    scores TEXT NOT NULL,
    related_score REAL,
    embedding BLOB,
    model_sha256 TEXT,
    kept_at TEXT NOT NULL,
    at REAL,
    UNIQUE (entity_key, digest)
);
CREATE INDEX IF NOT EXISTS texts_by_entity ON texts (entity_key, seq);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_key TEXT NOT NULL,
    entity TEXT NOT NULL,
    digest TEXT NOT NULL,
    tweet_id TEXT NOT NULL,
    text TEXT NOT NULL,
    answer TEXT NOT NULL,
    guess TEXT,
    guess_related_score REAL,
    guess_scores TEXT,
    embedding BLOB,
    answered_at TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'teach',
    UNIQUE (entity_key, digest)
);
"""


class TeachStoreError(ValueError):
    """A bad answer, entity or label file; the message says which and why."""


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class KeptText:
    """One tweet the node labelled, as the teach protocol shows it."""

    entity: str
    tweet_id: str
    text: str
    label: str
    scores: dict[str, float]
    related_score: float | None
    embedding: np.ndarray | None
    digest: str
    at: float | None = None  # event time, epoch seconds (None: kept before times were)

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "id": self.tweet_id,
            "text": self.text,
            "label": self.label,
            "scores": self.scores,
            "related_score": self.related_score,
            "digest": self.digest,
            "at": self.at,
        }


@dataclass(frozen=True)
class Answer:
    entity: str
    tweet_id: str
    text: str
    answer: str
    guess: str | None = None
    guess_related_score: float | None = None
    digest: str = ""
    # The model's scores and the tweet's embedding when it was answered (not for
    # imported labels): for the running accuracy estimate and the selector's diversity.
    guess_scores: dict[str, float] | None = field(default=None, compare=False)
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def related(self) -> bool | None:
        return None if self.answer == "skip" else self.answer != "unrelated"


class TeachStore:
    """The SQLite file; thread-safe (one connection behind a lock, WAL for other processes
    such as `node texts purge` while the node runs)."""

    def __init__(self, path: Path, max_per_entity: int = DEFAULT_TEXTS_PER_ENTITY) -> None:
        self.path = Path(path)
        self.max_per_entity = max_per_entity
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # 256 KiB of page cache instead of SQLite's 2 MiB: the node's RSS budget is tight,
        # and a per-entity scan of 2,000 rows is fast from the OS's page cache anyway.
        self._db.execute("PRAGMA cache_size=-256")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(texts)")}
        if "at" not in columns:  # a store from before texts had a time: they list as none
            self._db.execute("ALTER TABLE texts ADD COLUMN at REAL")
        self._db.execute("CREATE INDEX IF NOT EXISTS texts_by_time ON texts (entity_key, at)")
        self.path.chmod(0o600)  # tweet texts: readable by the node's user only

    @classmethod
    def in_state_dir(cls, state_dir: Path, max_per_entity: int = DEFAULT_TEXTS_PER_ENTITY):
        return cls(Path(state_dir) / TEACH_DB, max_per_entity)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- texts --------------------------------------------------------------------------

    def keep(
        self, rows: Sequence[tuple[Any, Any, str | None]], labelled_at: float | None = None
    ) -> int:
        """Keep ``(tweet, prediction, model_sha256)`` rows, newest last; trim per entity.
        ``labelled_at`` (epoch seconds, default now): the time of tweets without their own."""
        if self.max_per_entity <= 0:
            return 0
        now = utc_now()
        labelled_at = time.time() if labelled_at is None else labelled_at
        values = []
        for tweet, prediction, sha in rows:
            if not tweet.entity:
                continue
            created_at = getattr(tweet, "created_at", None)
            at = parse_wire(created_at).timestamp() if created_at else labelled_at
            blob = _blob(prediction.embedding)
            values.append(
                (
                    entity_key(tweet.entity),
                    tweet.entity,
                    text_digest(tweet.text),
                    tweet.id,
                    tweet.text,
                    prediction.label,
                    json.dumps(prediction.scores),
                    prediction.related_score,
                    blob,
                    sha,
                    now,
                    at,
                )
            )
        if not values:
            return 0
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO texts (entity_key, entity, digest, tweet_id, text, label,"
                " scores, related_score, embedding, model_sha256, kept_at, at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                values,
            )
            for key in {v[0] for v in values}:
                self._db.execute(
                    "DELETE FROM texts WHERE entity_key = ? AND seq <= (SELECT seq FROM texts"
                    " WHERE entity_key = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (key, key, self.max_per_entity),
                )
        return len(values)

    def candidates(self, entity: str, exclude: Iterable[str] = ()) -> list[KeptText]:
        """The kept texts of ``entity`` nobody has answered yet (nor skipped), oldest first."""
        skip = set(exclude)
        with self._lock:
            rows = self._db.execute(
                "SELECT t.entity, t.tweet_id, t.text, t.label, t.scores, t.related_score,"
                " t.embedding, t.digest, t.at FROM texts t LEFT JOIN answers a"
                " ON a.entity_key = t.entity_key AND a.digest = t.digest"
                " WHERE t.entity_key = ? AND a.seq IS NULL ORDER BY t.seq",
                (entity_key(entity),),
            ).fetchall()
        return [_kept(row) for row in rows if row[7] not in skip]

    def texts_between(
        self,
        entity: str,
        start: float,
        end: float,
        label: str | None = None,
        related: bool | None = None,
        limit: int = 100,
    ) -> tuple[list[KeptText], int]:
        """The kept texts of ``entity`` whose time is in [start, end), oldest first, at most
        ``limit``; with ``label``, only that polarity; with ``related``, only tweets the
        model marked (un)related. Returns them and how many matched in all."""
        where = ["entity_key = ?", "at >= ?", "at < ?"]
        args: list[Any] = [entity_key(entity), start, end]
        if label is not None:
            where.append("label = ?")
            args.append(label)
        if related is not None:  # the node's threshold (Prediction.related)
            where.append("related_score >= 0.5" if related else "related_score < 0.5")
        clause = " AND ".join(where)
        with self._lock:
            (total,) = self._db.execute(
                f"SELECT COUNT(*) FROM texts WHERE {clause}", args
            ).fetchone()
            rows = self._db.execute(
                f"SELECT {_TEXT_COLUMNS} FROM texts WHERE {clause} ORDER BY at, seq LIMIT ?",
                [*args, max(0, limit)],
            ).fetchall()
        return [_kept(row) for row in rows], total

    def span(self, entity: str) -> tuple[int, float | None]:
        """How many texts are kept for ``entity``, and the time of the oldest."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(at) FROM texts WHERE entity_key = ?", (entity_key(entity),)
            ).fetchone()
        return count, oldest

    def text(self, entity: str, digest: str) -> KeptText | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_TEXT_COLUMNS} FROM texts WHERE entity_key = ? AND digest = ?",
                (entity_key(entity), digest),
            ).fetchone()
        return _kept(row) if row else None

    def entities(self) -> list[dict[str, Any]]:
        """Every entity with kept texts or answers: name, texts, labels (skips apart)."""
        with self._lock:
            texts = self._db.execute(
                "SELECT entity_key, MAX(entity), COUNT(*) FROM texts GROUP BY entity_key"
            ).fetchall()
            answers = self._db.execute(
                "SELECT entity_key, MAX(entity), SUM(answer != 'skip'), SUM(answer = 'skip')"
                " FROM answers GROUP BY entity_key"
            ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for key, name, n in texts:
            out[key] = {"entity": name, "texts": n, "labels": 0, "skipped": 0}
        for key, name, labelled, skipped in answers:
            entry = out.setdefault(key, {"entity": name, "texts": 0})
            entry |= {"labels": labelled or 0, "skipped": skipped or 0}
        return sorted(out.values(), key=lambda e: e["entity"].casefold())

    def purge(self, entity: str | None = None, answers: bool = False) -> tuple[int, int]:
        """Delete kept texts (and with ``answers``, the labels too) of one entity or all.
        Returns (texts, answers) deleted."""
        where, args = ("WHERE entity_key = ?", (entity_key(entity),)) if entity else ("", ())
        with self._lock, self._db:
            texts = self._db.execute(f"DELETE FROM texts {where}", args).rowcount
            labels = 0
            if answers:
                labels = self._db.execute(f"DELETE FROM answers {where}", args).rowcount
        with self._lock:
            self._db.execute("VACUUM")  # the texts leave the file, not just the index
        return texts, labels

    # -- answers ------------------------------------------------------------------------

    def answer(self, entity: str, digest: str, answer: str) -> Answer:
        """Record the user's answer for a kept text (a second answer replaces the first)."""
        if answer not in ANSWERS:
            raise TeachStoreError(f"unknown answer {answer!r}; one of {', '.join(ANSWERS)}")
        kept = self.text(entity, digest)
        if kept is None:
            raise TeachStoreError(f"no kept text {digest!r} for entity {entity!r}")
        record = Answer(
            kept.entity,
            kept.tweet_id,
            kept.text,
            answer,
            kept.label,
            kept.related_score,
            kept.digest,
            kept.scores,
            kept.embedding,
        )
        self._put_answers([record], "teach", replace=True)
        return record

    def undo(self, entity: str) -> Answer | None:
        """Forget the entity's most recent answer (its tweet becomes a candidate again)."""
        with self._lock, self._db:
            row = self._db.execute(
                f"SELECT seq, {_ANSWER_COLUMNS} FROM answers WHERE entity_key = ?"
                " AND source = 'teach' ORDER BY seq DESC LIMIT 1",
                (entity_key(entity),),
            ).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM answers WHERE seq = ?", (row[0],))
        return _answer(row[1:])

    def answers(self, entity: str | None = None, with_skips: bool = False) -> list[Answer]:
        where = ["1"]
        args: list[Any] = []
        if entity:
            where.append("entity_key = ?")
            args.append(entity_key(entity))
        if not with_skips:
            where.append("answer != 'skip'")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE {' AND '.join(where)} ORDER BY seq",
                args,
            ).fetchall()
        return [_answer(row) for row in rows]

    def _put_answers(self, records: Iterable[Answer], source: str, replace: bool) -> int:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        now = utc_now()
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany(
                f"{verb} INTO answers (entity_key, entity, digest, tweet_id, text, answer, guess,"
                " guess_related_score, guess_scores, embedding, answered_at, source)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        entity_key(r.entity),
                        r.entity,
                        r.digest or text_digest(r.text),
                        r.tweet_id,
                        r.text,
                        r.answer,
                        r.guess,
                        r.guess_related_score,
                        None if r.guess_scores is None else json.dumps(r.guess_scores),
                        _blob(r.embedding),
                        now,
                        source,
                    )
                    for r in records
                ],
            )
            return self._db.total_changes - before

    # -- label sets between nodes ---------------------------------------------------------

    def export_tsv(self, entity: str | None = None) -> str:
        """The labels as a RepLab-style TSV: id, entity, filtering, polarity, text."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["id", "entity", "filtering", "polarity", "text"])
        for a in self.answers(entity):
            related = a.answer != "unrelated"
            polarity = a.answer if related else ""
            writer.writerow([a.tweet_id, a.entity, "RELATED" if related else "UNRELATED",
                             polarity, " ".join(a.text.split())])  # fmt: skip
        return out.getvalue()

    def import_tsv(self, text: str) -> tuple[int, int]:
        """Add labels from :meth:`export_tsv`'s format; ones already here (same entity and
        text) are kept as they are. Returns (added, already present)."""
        records = list(parse_label_tsv(text))
        added = self._put_answers(records, "import", replace=False)
        return added, len(records) - added


def parse_label_tsv(text: str) -> Iterator[Answer]:
    """Rows of a label TSV (header id, entity, filtering, polarity, text); a bad row is a
    :class:`TeachStoreError` naming its line, and nothing is imported."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter="\t"))
    if not rows or [c.strip().lower() for c in rows[0][:5]] != [
        "id", "entity", "filtering", "polarity", "text"
    ]:  # fmt: skip
        raise TeachStoreError("not a label file: the header must be id, entity, filtering, "
                              "polarity, text (tab-separated)")  # fmt: skip
    parsed = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 5:
            raise TeachStoreError(f"line {line}: {len(row)} fields, expected 5")
        tweet_id, entity, filtering, polarity, body = (c.strip() for c in row)
        if not entity or not body:
            raise TeachStoreError(f"line {line}: entity and text must not be empty")
        filtering = filtering.upper()
        if filtering == "UNRELATED":
            answer = "unrelated"
        elif filtering == "RELATED" and polarity.lower() in POLARITIES:
            answer = polarity.lower()
        else:
            raise TeachStoreError(
                f"line {line}: filtering {filtering!r} / polarity {polarity!r}; expected "
                "UNRELATED, or RELATED with negative, neutral or positive"
            )
        digest = text_digest(body)
        parsed.append(Answer(entity, tweet_id or digest, body, answer, digest=digest))
    return iter(parsed)


_TEXT_COLUMNS = "entity, tweet_id, text, label, scores, related_score, embedding, digest, at"
_ANSWER_COLUMNS = (
    "entity, tweet_id, text, answer, guess, guess_related_score, digest, guess_scores, embedding"
)


def _blob(embedding: np.ndarray | None) -> bytes | None:
    return None if embedding is None else np.asarray(embedding, np.float16).tobytes()


def _vector(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, np.float16).astype(np.float32)


def _kept(row: tuple[Any, ...]) -> KeptText:
    entity, tweet_id, text, label, scores, related, blob, digest, at = row
    return KeptText(
        entity, tweet_id, text, label, json.loads(scores), related, _vector(blob), digest, at
    )


def _answer(row: tuple[Any, ...]) -> Answer:
    *head, scores, blob = row
    return Answer(*head, json.loads(scores) if scores else None, _vector(blob))


class TextKeeper:
    """Hands labelled tweets to the store on a writer thread: ``offer`` never blocks.

    A full queue (the disk is slower than the stream) drops texts and counts them; a
    failing write is logged and counted. Labelling goes on either way.
    """

    def __init__(self, store: TeachStore, queue_size: int = DEFAULT_QUEUE) -> None:
        self.store = store
        # (rows, when they were labelled): the writer may run a while behind the stream.
        self._queue: queue.Queue[tuple[list[tuple[Any, Any, str | None]], float] | None] = (
            queue.Queue(queue_size)
        )
        self.kept = 0
        self.dropped = 0
        self.failed = 0
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="teach-texts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, rows: list[tuple[Any, Any, str | None]]) -> None:
        if not rows:
            return
        try:
            self._queue.put_nowait((rows, time.time()))
        except queue.Full:
            self.dropped += len(rows)
            self._warn("teach text queue full: %d texts not kept so far", self.dropped)

    def stop(self, timeout: float = 2.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once everything offered so far is written (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.kept += self.store.keep(*item)
            except Exception as exc:
                self.failed += len(item[0] if item else [])
                self._warn("keeping teach texts failed (%s); labelling goes on", exc)
            finally:
                self._queue.task_done()

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:  # once a minute, not once a batch
            self._last_warning = now
            log.warning(message, *args)
