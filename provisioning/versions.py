"""Release versions of signed artifacts: dotted non-negative integers, compared numerically.

"2", "10" and "1.4.2" are valid; "1.10" is newer than "1.9" (not a string comparison) and
"1.0" equals "1", so it is not an upgrade over it. Leading zeros ("01") are refused so
that one version has one spelling, which also names its slot folder on the node.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

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
    """Whether package version ``installed`` is ``minimum`` or later, by PEP 440 (the rules
    pip uses): "2.3.0rc1" comes before "2.3.0", "2.3.0.post1" after it. A version that
    PEP 440 cannot read is not at least anything."""
    try:
        return Version(installed) >= Version(minimum)
    except InvalidVersion:
        return False
