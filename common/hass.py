"""Home Assistant object ids: one per node id, and never the same for two node ids.

The object id names a node's discovery topics (``homeassistant/sensor/<object id>/...``)
and the broker's ACL lets a node user write only under its own, so two node ids that map
to one object id would let one node forge the other's sensors (issue 20: ``pi.1`` and
``pi_1_4e59eb52``).
"""

from __future__ import annotations

import hashlib
import re

# Home Assistant allows [a-zA-Z0-9_-] in a discovery topic's object id.
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
# What the hashed form ends in; an id that already ends like this is hashed too.
_HASH_SUFFIX = re.compile(r"_[0-9a-f]{8}$")
PREFIX = "repedge_"


def _digest(node_id: str) -> str:
    return hashlib.sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def object_id(node_id: str) -> str:
    """``repedge_<node id>``, restricted to ``[a-zA-Z0-9_-]``.

    An id that is already clean is kept as it is, so the usual ``pi-kitchen`` stays
    readable in Home Assistant. Any other id (one that needed replacing, or one that
    ends like a hashed id does: ``_`` and 8 hex digits) becomes its cleaned form plus
    ``_`` and 8 hex digits of its own sha256. Kept ids never end in that suffix and
    hashed ids always do, so a kept id and a hashed id never meet; two hashed ids meet
    only if both their cleaned forms and their hashes agree.
    """
    cleaned = _NOT_ALLOWED.sub("_", node_id)
    if cleaned != node_id or _HASH_SUFFIX.search(node_id):
        cleaned += "_" + _digest(node_id)
    return f"{PREFIX}{cleaned}"
