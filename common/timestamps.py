"""One timestamp format on the wire: UTC, milliseconds, ``Z`` (``2026-12-05T06:15:02.123Z``).

Label and error records, telemetry, node events and provisioning events all use it, so a
consumer parses one form. :func:`parse_wire` also reads ``+00:00`` (older records).
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_wire(moment: datetime) -> str:
    """``moment`` (timezone-aware) as the wire form, in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a wire timestamp needs a timezone-aware datetime")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def utc_now() -> str:
    """Now, in the wire form."""
    return to_wire(datetime.now(UTC))


def parse_wire(text: str) -> datetime:
    """A wire timestamp (``Z`` or an explicit offset) as an aware datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return moment
