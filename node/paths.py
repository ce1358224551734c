"""Where a node keeps its state; light enough for the CLI to import."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir(node_id: str) -> Path:
    """$XDG_STATE_HOME/repedge/<node id>, else ~/.local/state/repedge/<node id>."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "repedge" / node_id
