"""Readers for labeled tweets: SemEval TSV, RepLab 2013 TSV, generic CSV / JSONL.

Every reader returns :class:`Example` lists with labels normalised to lower case and
fails with a :class:`DataError` that names the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgemodel.bundle import RELATED_LABELS

POLARITY_LABELS = ("negative", "neutral", "positive")
FILTER_LABELS = RELATED_LABELS  # RepLab filtering, in the order of the related head


class DataError(ValueError):
    """A data file is missing, empty, badly encoded or has unexpected content."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None  # polarity; None for RepLab tweets unrelated to the entity
    entity: str | None = None
    related: bool | None = None  # RepLab filtering; None where the source has none
    source: str = ""
    tweet_id: str = ""


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        # utf-8-sig: a file saved with a byte order mark (Excel, Notepad) would otherwise
        # carry U+FEFF into its first header name and fail as a "missing column".
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    # Split on newlines only: str.splitlines() also breaks at U+2028 etc. inside tweets.
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


def _check_label(value: str, allowed: Iterable[str], path: Path, line_no: int) -> str:
    label = value.strip().lower()
    allowed = tuple(allowed)
    if label not in allowed:
        raise DataError(f"{path}:{line_no}: unknown label {value!r} (expected one of {allowed})")
    return label


def _header_index(header: list[str], wanted: Iterable[str], path: Path) -> dict[str, int]:
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [w for w in wanted if w.lower() not in index]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the header has {header}")
    return {w: index[w.lower()] for w in wanted}


def read_semeval(path: Path) -> list[Example]:
    """SemEval-2017 Task 4A TSV: ``tweet_id<TAB>label<TAB>text`` (header optional)."""
    lines = _read_lines(path)
    if lines[0].lower().startswith("tweet_id\t"):
        lines = lines[1:]
        first = 2
    else:
        first = 1
    examples = []
    for line_no, line in enumerate(lines, start=first):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(f"{path}:{line_no}: expected 3 tab-separated columns, got {len(parts)}")
        tweet_id, label, text = parts
        label = _check_label(label, POLARITY_LABELS, path, line_no)
        examples.append(Example(text=text, label=label, source="semeval", tweet_id=tweet_id))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def read_replab(path: Path) -> list[Example]:
    """RepLab 2013 TSV: entity_id, entity, tweet_id, filtering, polarity, text (with header).

    Unrelated tweets keep ``label=None``: they train the filtering head only.
    """
    lines = _read_lines(path)
    header = lines[0].split("\t")
    cols = _header_index(header, ("entity", "tweet_id", "filtering", "polarity", "text"), path)
    examples = []
    for line_no, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != len(header):
            raise DataError(
                f"{path}:{line_no}: expected {len(header)} tab-separated columns, got {len(parts)}"
            )
        related = _check_label(parts[cols["filtering"]], ("related", "unrelated"), path, line_no)
        polarity = parts[cols["polarity"]].strip()
        label = _check_label(polarity, POLARITY_LABELS, path, line_no) if polarity else None
        if related == "related" and label is None:
            raise DataError(f"{path}:{line_no}: a RELATED tweet without polarity")
        examples.append(
            Example(
                text=parts[cols["text"]],
                label=label,
                entity=parts[cols["entity"]].strip(),
                related=related == "related",
                source="replab",
                tweet_id=parts[cols["tweet_id"]].strip(),
            )
        )
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def read_table(
    path: Path,
    text_column: str = "text",
    label_column: str = "label",
    entity_column: str | None = None,
) -> list[Example]:
    """Generic CSV (``.csv``/``.tsv``) or JSON Lines (``.jsonl``) with named columns."""
    wanted = [text_column, label_column] + ([entity_column] if entity_column else [])
    rows: list[tuple[int, dict[str, str]]] = []
    if path.suffix.lower() == ".jsonl":
        for line_no, line in enumerate(_read_lines(path), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line")
            missing = [w for w in wanted if w not in row]
            if missing:
                raise DataError(f"{path}:{line_no}: missing field(s) {missing}")
            rows.append((line_no, row))
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        lines = _read_lines(path)
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader)
        cols = _header_index(header, wanted, path)
        for line_no, parts in enumerate(reader, start=2):
            if len(parts) != len(header):
                raise DataError(f"{path}:{line_no}: expected {len(header)} columns")
            rows.append((line_no, {w: parts[i] for w, i in cols.items()}))
    examples = []
    for line_no, row in rows:
        text = row[text_column]
        if not isinstance(text, str):
            raise DataError(f"{path}:{line_no}: {text_column!r} must be a string")
        label = _check_label(str(row[label_column]), POLARITY_LABELS, path, line_no)
        entity = str(row[entity_column]) if entity_column and row[entity_column] else None
        examples.append(Example(text=text, label=label, entity=entity, source=path.stem))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def read_labeled(
    path: Path,
    fmt: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    entity_column: str | None = None,
) -> list[Example]:
    """Read any supported file; ``fmt`` auto-detects from the header."""
    path = Path(path)
    if fmt == "auto":
        head = _read_lines(path)[0].lower()
        first = head.split("\t")
        if head.startswith("entity_id\t"):
            fmt = "replab"
        elif len(first) == 3 and (first[0] == "tweet_id" or first[0].isdigit()):
            fmt = "semeval"
        else:
            fmt = "table"
    if fmt == "semeval":
        return read_semeval(path)
    if fmt == "replab":
        return read_replab(path)
    if fmt == "table":
        return read_table(path, text_column, label_column, entity_column)
    raise DataError(f"unknown format {fmt!r} (auto, semeval, replab, table)")
