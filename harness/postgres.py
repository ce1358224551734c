"""A throwaway PostgreSQL server from Debian's `postgresql` package, for tests and benchmarks.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user the
package creates (``runuser``); as anyone else it is the caller's own. Trust auth, a
socket and a TCP port on 127.0.0.1 only, stopped with ``pg_ctl stop -m immediate``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common.ports import free_port, wait_listening

USER = "repedge"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


def missing_reason() -> str | None:
    """Why no PostgreSQL can be started here, or None when one can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dashboard]')"
    if _bindir() is None:
        return "PostgreSQL server not installed (apt-get install postgresql; scripts/setup.sh)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser to start PostgreSQL as its own user"
    return None


class PostgresServer:
    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(missing_reason())
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's tmp_path: its 0700 parents keep the postgres user out.
        self.dir = Path(tempfile.mkdtemp(prefix="repedge-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        wait_listening("127.0.0.1", self.port, 30)
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
