"""Inert text: what an MQTT payload, a URL or a node id may show on a screen or in a log.

A feeder controls entity names, a node id comes from its configuration, error reasons
can quote input. Written raw to a terminal, an ESC or C1 sequence can set the clipboard
(OSC 52), retitle the window or clear the screen; bidi overrides make text read other
than it is; a newline forges a log line. :func:`inert` turns every such character into a
visible escape (``\\x1b``, ``\\u202e``), so the operator sees that it was there and
nothing acts on it. ``dashboard top`` (:func:`inert_json` on what it draws), the
dashboard's web page and JSON (the same), and the node's and dashboard's log handlers
(:func:`inert_log_handlers`) all go through it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TextIO

# Unicode categories Cc (C0, DEL, C1), Cf (format: bidi embeddings, overrides, isolates,
# marks, invisible operators, tags), Zl/Zp (line and paragraph separators) and Cs (lone
# surrogates). ZWJ/ZWNJ (U+200C/D) stay: emoji sequences and Persian script need them,
# and they move no cursor. tests/test_inert_text.py checks this class against
# unicodedata for every code point.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(text: object) -> str:
    """``str(text)`` with every control, format and separator character escaped."""
    value = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, value)


def inert_json(value: Any) -> Any:
    """A copy of decoded JSON (dicts, lists, strings, numbers) with every string, keys
    included, made :func:`inert`; for views that show what MQTT carried."""
    if isinstance(value, str):
        return _UNSAFE.sub(_escape, value)
    if isinstance(value, dict):
        return {inert_json(k): inert_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [inert_json(v) for v in value]
    return value


class InertLogFilter(logging.Filter):
    """Makes a record's message (arguments included) and traceback inert before any
    handler formats it: a log line that quotes a topic, an entity or an exception message
    stays one line of plain text. Traceback lines keep their line breaks."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = inert(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = "\n".join(inert(line) for line in formatted.splitlines())
        if record.stack_info:
            record.stack_info = "\n".join(inert(line) for line in record.stack_info.splitlines())
        return True


def inert_log_handlers(*handlers: logging.Handler) -> None:
    """Add :class:`InertLogFilter` to ``handlers`` (default: the root logger's, as
    ``logging.basicConfig`` made them); call once after configuring logging."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, InertLogFilter) for f in handler.filters):
            handler.addFilter(InertLogFilter())


class InertWriter:
    """Wraps a text stream (a terminal): every write is made :func:`inert` except its
    line breaks, for line-based views that print what a node or a feeder sent."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write("\n".join(inert(part) for part in text.split("\n")))

    def flush(self) -> None:
        self._stream.flush()
