"""systemd's service notification protocol (sd_notify), without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``: a unix datagram socket, a path or,
when it starts with ``@``, an abstract socket name. A service sends newline-separated
``KEY=VALUE`` lines to it: ``READY=1`` once it serves, ``WATCHDOG=1`` at least every
``WATCHDOG_USEC`` microseconds when ``WatchdogSec=`` is set (or systemd kills and, with
``Restart=on-failure``, restarts it), ``STATUS=...`` for `systemctl status`, ``STOPPING=1``.
See sd_notify(3) and systemd.service(5). Outside systemd every call is a cheap no-op.

The node pets the watchdog from its inference loop, not from a timer thread of its own: a
timer would keep petting while the worker hangs, which is the failure the watchdog is for.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.service import NodeService

log = logging.getLogger("repedge.node.systemd")


def socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET's value as an address for ``socket.sendto`` (None if unusable)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock and anything newer: not supported here


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds systemd waits for a WATCHDOG=1, or None when no watchdog applies to us."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # the watchdog is meant for another process (our parent, say)
    return usec / 1_000_000


class Notifier:
    """Sends notifications to systemd; does nothing when not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket; not notifying systemd", raw)
        self.watchdog_s = watchdog_interval(env) if self.address else None
        self._lock = threading.Lock()
        self._last_pet = float("-inf")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(message, self.address)
                return True
            except OSError as exc:  # systemd gone or socket full: never fatal for the node
                log.warning("could not notify systemd (%s): %s", self.address, exc)
                return False

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={status}")
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def heartbeat(self) -> None:
        """Call from the loop whose liveness matters, as often as it likes: pets the
        watchdog at most twice per interval (systemd's own recommendation)."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_pet >= self.watchdog_s / 2:
            self._last_pet = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# Test hook: while the file this variable names exists, the inference loop blocks, as a
# hung worker would (tests/test_systemd.py checks the watchdog then stops being petted).
HANG_FILE_ENV = "REPEDGE_TEST_HANG_WORKER_WHILE"


def _block_while(path: Path) -> None:
    while path.exists():
        time.sleep(0.05)


def attach(service: NodeService) -> Notifier:
    """Wire a :class:`Notifier` to a node service (before ``service.start()``): READY=1 when
    its model is loaded and its subscription acknowledged, WATCHDOG=1 from its worker loop."""
    notifier = Notifier()
    hang_file = os.environ.get(HANG_FILE_ENV)
    if hang_file:
        service.hooks.heartbeat.append(lambda: _block_while(Path(hang_file)))
    if notifier.enabled:
        cfg = service.config
        status = f"node {cfg.node_id} serving {cfg.tweets_subscription}"
        service.hooks.on_ready.append(lambda: notifier.ready(status))
        service.hooks.heartbeat.append(notifier.heartbeat)
    return notifier
