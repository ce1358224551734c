"""`dashboard serve` as a subprocess, for the browser tests and the screenshot scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.ports import free_port, wait_listening
from harness.node import REPO
from harness.waiting import WAIT_S, wait_until


class DashboardProcess:
    """Started on a free port; returns once it serves and has subscribed."""

    def __init__(
        self, broker_url: str, topics: list[str], log: Path, extra: list[str] | None = None
    ) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "dashboard", "serve", "--broker", broker_url]
        args += ["--port", str(self.port), "--push-interval", "0.25"]
        # Each test its own history database, never the user's default one.
        args += extra or ["--db", str(log.parent / f"history-{self.port}.sqlite3")]
        for topic in topics:
            args += ["--topic", topic]
        self.log = log
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
        wait_listening("127.0.0.1", self.port, WAIT_S)
        # Subscribed (logged once the subscription is sent), so nothing published is missed.
        wait_until(
            lambda: "subscribed to" in log.read_text()[start:],
            what=lambda: f"the dashboard's subscription; log:\n{log.read_text()}",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(WAIT_S)
