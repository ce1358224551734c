"""Inert text: what an MQTT payload, a URL or a node id may show on a screen or in a log.

A feeder controls entity names, a node id comes from its configuration, error reasons
can quote input. Written raw to a terminal, an ESC or C1 sequence can set the clipboard
(OSC 52), retitle the window or clear the screen; bidi overrides make text read other
than it is; a newline forges a log line. :func:`inert` turns every such character into a
visible escape (``\\x1b``, ``\\u202e``), so the operator sees that it was there and
nothing acts on it. ``dashboard top``, the dashboard's web page and JSON, and log lines
that quote outside data all go through it.
"""

from __future__ import annotations

import re
from typing import Any

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
