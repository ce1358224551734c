"""A tweet's own time (``created_at``): validated and normalised for the records.

A tweet may say when it was written, as ISO 8601 with a UTC offset ("2012-12-19T08:15:00Z",
"2012-12-19T09:15:00+01:00") or as Unix epoch milliseconds (an integer). The node copies
it into the record as ISO 8601 UTC with milliseconds, the format of its own ``timestamp``,
so history and alerts can bucket by event time when a feed is replayed or delayed.

A bad value does not cost the tweet its label: the time is metadata, and the node's own
``timestamp`` is still there. The record then carries ``created_at_error`` (one line saying
what is wrong) instead of ``created_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.timestamps import to_wire

# Twitter started in March 2006; anything earlier as epoch ms is almost always epoch
# seconds sent by mistake (1.3e9 s read as ms is January 1970).
EARLIEST = datetime(2006, 1, 1, tzinfo=UTC)
# Clocks drift, and nodes in a fleet disagree; a day ahead is a broken clock or a typo.
MAX_AHEAD = timedelta(days=1)


class EventTimeError(ValueError):
    """Why a ``created_at`` value was not used (one line, for ``created_at_error``)."""


def format_utc(moment: datetime) -> str:
    return to_wire(moment)  # the wire's one form (common/timestamps.py)


def parse_created_at(value: object, now: datetime | None = None) -> str:
    """``value`` as ISO 8601 UTC with milliseconds; raise :class:`EventTimeError`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EventTimeError("'created_at' must be an ISO 8601 string or epoch milliseconds")
    moment = _from_iso(value) if isinstance(value, str) else _from_epoch_ms(value)
    now = now or datetime.now(UTC)
    if moment < EARLIEST:
        hint = " (epoch seconds instead of milliseconds?)" if not isinstance(value, str) else ""
        raise EventTimeError(f"'created_at' {format_utc(moment)} is before 2006{hint}")
    if moment > now + MAX_AHEAD:
        raise EventTimeError(f"'created_at' {format_utc(moment)} is more than a day ahead")
    return format_utc(moment)


def _from_iso(value: str) -> datetime:
    if len(value) > 40:
        raise EventTimeError("'created_at' is longer than 40 characters")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise EventTimeError(f"'created_at' {value!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        # A local time of unknown zone would shift every count by hours: refuse to guess.
        raise EventTimeError(f"'created_at' {value!r} has no UTC offset (add Z or +hh:mm)")
    return moment


def _from_epoch_ms(value: float) -> datetime:
    if value != value or value in (float("inf"), float("-inf")):
        raise EventTimeError("'created_at' is not a finite number")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise EventTimeError(f"'created_at' {value} ms is out of range") from None
