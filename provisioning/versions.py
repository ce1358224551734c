"""Release versions of signed artifacts: dotted non-negative integers, compared numerically.

"2", "10" and "1.4.2" are valid; "1.10" is newer than "1.9" (not a string comparison) and
"1.0" equals "1", so it is not an upgrade over it. Leading zeros ("01") are refused so
that one version has one spelling, which also names its slot folder on the node.
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}$")


class VersionError(ValueError):
    """Not a release version this tool accepts."""


def parse_version(text: str) -> tuple[int, ...]:
    """The comparable form of a version; trailing zeros dropped so "1.0" == "1"."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise VersionError(
            f"invalid version {text!r}: use dotted non-negative integers such as 3 or 1.4.2"
        )
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_newer(candidate: str, than: str | None) -> bool:
    return than is None or parse_version(candidate) > parse_version(than)


def runtime_version_at_least(installed: str, minimum: str) -> bool:
    """Compare package versions such as "2.3.0" or "2.14.0rc1" by their numeric parts."""

    def numeric(version: str) -> tuple[int, ...]:
        parts = []
        for piece in version.split("."):
            digits = re.match(r"\d+", piece)
            if not digits:
                break
            parts.append(int(digits.group()))
            if digits.group() != piece:  # "0rc1": a pre-release, stop at its number
                break
        return tuple(parts)

    return numeric(installed) >= numeric(minimum)
