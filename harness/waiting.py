"""Waiting for a condition instead of sleeping for a guess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Generous: these bound a hang on a loaded 2-core machine, they do not measure speed.
WAIT_S = 60.0


def wait_until(
    predicate: Callable[[], T],
    timeout: float = WAIT_S,
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    AssertionError after ``timeout`` seconds naming ``what`` (a callable is asked then, so
    the message can show the last state seen)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said or predicate}")
        time.sleep(interval)


def holds_for(
    predicate: Callable[[], object], seconds: float, interval: float = 0.05, what: str = ""
) -> None:
    """Check that ``predicate`` stays truthy for ``seconds`` (e.g. no duplicate arrives
    after the last expected message); raise AssertionError the moment it does not."""
    deadline = time.monotonic() + seconds
    while True:
        if not predicate():
            raise AssertionError(f"no longer true: {what or predicate}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def settled(
    value: Callable[[], T], quiet_s: float, timeout: float = WAIT_S, interval: float = 0.05
) -> T:
    """Wait until ``value()`` has not changed for ``quiet_s`` seconds and return it: for a
    stream that has no end marker, such as a share group draining what it was given."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() >= deadline:
            raise AssertionError(f"still changing after {timeout:g} s: {last!r}")
        time.sleep(interval)
        current = value()
        if current != last:
            last, since = current, time.monotonic()
    return last
