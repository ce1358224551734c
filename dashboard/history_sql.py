"""The two databases history runs on, behind one small interface: SQLite and PostgreSQL.

:mod:`dashboard.history` writes every statement once, in the SQL both understand
(``INSERT ... ON CONFLICT ... DO UPDATE``, ``CASE``, ``GROUP BY``) with ``?`` placeholders.
An adapter only connects, translates the placeholder, and runs a transaction; nothing
else differs. Each adapter holds one connection behind a lock: the recorder's flushes and
the web threads' queries take turns, which keeps both databases' rules simple (SQLite
connections are not shared across threads by default; a psycopg connection runs one
statement at a time anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

BUSY_TIMEOUT_MS = 5000  # a second process on the same file waits rather than failing
WRITER_LOCK_KEY = 0x7265_7065_6467_65  # "repedge": PostgreSQL advisory lock of the recorder


class HistoryDatabaseError(RuntimeError):
    """The history database cannot be opened or used; the message says which and why."""


class Dialect(Protocol):
    name: str
    where: str  # for messages: the file, or the server without its password
    table_suffix: str  # after CREATE TABLE (...): the dialect's storage option, if any

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def write_many(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Every (statement, rows) pair in one transaction: all of it lands, or none."""
        ...

    def run(self, sql: str) -> None: ...

    def claim_writer(self) -> bool:
        """Become this database's only recorder; False if another process already is.

        Two recorders on one database would count every record twice.
        """
        ...

    def close(self) -> None: ...


class SQLiteDialect:
    """An embedded file: WAL, so readers never wait for the writer, and fsync per batch."""

    name = "sqlite"
    table_suffix = " WITHOUT ROWID"

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, with explicit BEGIN around each batch.
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives a power cut too; one fsync per flush is cheap.
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise HistoryDatabaseError(f"cannot open history database {path}: {exc}") from None
        self._lock = threading.Lock()
        self._path = path
        self._writer_fd: int | None = None

    def claim_writer(self) -> bool:
        # An advisory lock on a file beside the database: released by the kernel when the
        # process dies, even by kill -9, so a crashed dashboard never blocks the next one.
        if self._writer_fd is not None:
            return True
        fd = os.open(f"{self._path}.writer", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._writer_fd = fd
        return True

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, _errors(self.where):
            return self._db.execute(sql, tuple(params)).fetchall()

    def write_many(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self._lock, _errors(self.where):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in batches:
                    self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def run(self, sql: str) -> None:
        """Statements separated by ``;``, in one transaction."""
        with self._lock, _errors(self.where):
            try:
                self._db.executescript(f"BEGIN IMMEDIATE;\n{sql};\nCOMMIT;")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None


class PostgresDialect:
    """A PostgreSQL server through psycopg 3, for a central site."""

    name = "postgresql"
    table_suffix = ""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise HistoryDatabaseError(
                "--db postgresql://... needs psycopg 3: pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        try:
            info = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise HistoryDatabaseError(f"not a PostgreSQL URL: {exc}") from None
        self.where = "postgresql://{}:{}/{}".format(
            info.get("host", "localhost"), info.get("port", 5432), info.get("dbname", "")
        )
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HistoryDatabaseError(f"cannot connect to {self.where}: {message}") from None
        self._lock = threading.Lock()

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")  # the shared SQL has no literal question marks

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, _errors(self.where, self._psycopg.Error):
            return self._db.execute(self._sql(sql), tuple(params)).fetchall()

    def write_many(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with (
            self._lock,
            _errors(self.where, self._psycopg.Error),
            self._db.transaction(),
            self._db.cursor() as cursor,
        ):
            for sql, rows in batches:
                if rows:
                    cursor.executemany(self._sql(sql), rows)

    def run(self, sql: str) -> None:
        with self._lock, _errors(self.where, self._psycopg.Error), self._db.transaction():
            for statement in filter(str.strip, sql.split(";")):
                self._db.execute(statement)

    def claim_writer(self) -> bool:
        # A session-level advisory lock: PostgreSQL drops it when the connection ends,
        # however the process ended.
        rows = self.query("SELECT pg_try_advisory_lock(?)", (WRITER_LOCK_KEY,))
        return bool(rows[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@contextlib.contextmanager
def _errors(where: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Database errors become one HistoryDatabaseError naming the database."""
    try:
        yield
    except (sqlite3.Error, *kinds) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HistoryDatabaseError(f"history database {where}: {first}") from exc


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def connect(db: str | Path) -> Dialect:
    """``postgresql://...`` (or ``postgres://``) for a server, anything else is a SQLite file."""
    if isinstance(db, str) and is_postgres_url(db):
        return PostgresDialect(db)
    return SQLiteDialect(Path(db).expanduser())
