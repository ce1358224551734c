"""Threads that come back: a helper for the node's side jobs (telemetry, HTTP servers).

Labelling must never depend on them, and they must never stay dead: an exception
(say OSError "Too many open files" while reading /proc) is logged and the job restarts
after a pause that grows to ``max_delay_s`` while it keeps failing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# A run this long counts as healthy: the next failure starts again from the short pause.
_HEALTHY_S = 60.0


def supervised_thread(
    target: Callable[[], None],
    name: str,
    stop: threading.Event,
    log: logging.Logger,
    delay_s: float = 1.0,
    max_delay_s: float = 30.0,
) -> threading.Thread:
    """Start a daemon thread that runs ``target()`` until ``stop`` is set, restarting it
    (and saying so) whenever it raises or returns early."""

    def run() -> None:
        delay = delay_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                target()
            except Exception as exc:
                if time.monotonic() - started > _HEALTHY_S:
                    delay = delay_s
                log.error("%s thread died (%s: %s); restarting in %.0f s",
                          name, type(exc).__name__, exc, delay, exc_info=exc)  # fmt: skip
            else:
                if stop.is_set():
                    return
                log.error("%s thread ended unexpectedly; restarting in %.0f s", name, delay)
            if stop.wait(delay):
                return
            log.info("%s thread restarted", name)
            delay = min(max_delay_s, delay * 2)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
