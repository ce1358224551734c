"""Generated Markdown reports that keep the hand-written notes below a marker."""

from __future__ import annotations

from pathlib import Path

# Hand-written analysis below this line in a generated Markdown file survives a rerun.
NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"


def write_markdown_keeping_notes(path: Path, generated: str) -> None:
    """Write ``generated`` to ``path``, keeping what follows NOTES_MARKER in the old file."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    notes = old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else NOTES_MARKER + "\n"
    path.write_text(generated + "\n" + notes, encoding="utf-8")
