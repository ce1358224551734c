"""`trainer select`: which pool tweets of a brand to label next (active learning).

Reads an unlabelled POOL and, optionally, the tweets already labelled (DONE), both
RepLab-format TSVs with a header naming at least ``entity`` and ``text`` (``filtering``
and ``polarity`` may be empty in POOL). Runs them through the bundle's FlatBuffer with the
node's own inference code, fits the brand's head on DONE's labels where there are enough
(:mod:`edgemodel.adaptation`, so the selector sees the model as it would be after
adapting), and picks with :func:`edgemodel.selection.select`. NEXT is POOL's header and
the chosen rows, verbatim, in the order to label them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemodel.adaptation import AdaptationError, fit_entity_head
from edgemodel.batching import encode_readable, outputs_in_length_order
from edgemodel.bundle import EMBEDDING_OUTPUT, OUTPUT_NAME, RELATED_OUTPUT, ModelBundle
from edgemodel.entity_heads import entity_key
from edgemodel.inference import Classifier
from edgemodel.selection import PoolOutputs, select

POLARITY = ("negative", "neutral", "positive")


class SelectError(ValueError):
    """Bad select input: unreadable TSV, no entity, nothing left to choose from."""


@dataclass
class TsvRows:
    header: str
    lines: list[str]  # the data rows, verbatim
    entity: list[str]
    text: list[str]
    tweet_id: list[str]
    related: list[int]  # 1 / 0, -1 where blank
    polarity: list[str]  # lower case, "" where blank


def read_tsv(path: Path) -> TsvRows:
    """A RepLab-format TSV whose label columns may be blank (one clear error otherwise)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SelectError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise SelectError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise SelectError(f"{path}: file is empty")
    header = lines[0].split("\t")
    col = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in ("entity", "text") if c not in col]
    if missing:
        raise SelectError(f"{path}: missing column(s) {missing}; the header has {header}")
    rows = TsvRows(lines[0], [], [], [], [], [], [])
    for line_no, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != len(header):
            raise SelectError(
                f"{path}:{line_no}: expected {len(header)} tab-separated columns, got {len(parts)}"
            )

        def cell(name: str, parts: list[str] = parts) -> str:
            return parts[col[name]].strip() if name in col else ""

        filtering = cell("filtering").lower()
        polarity = cell("polarity").lower()
        if filtering not in ("", "related", "unrelated"):
            raise SelectError(f"{path}:{line_no}: filtering {filtering!r} is not RELATED/UNRELATED")
        if polarity not in ("", *POLARITY):
            raise SelectError(f"{path}:{line_no}: polarity {polarity!r} is not one of {POLARITY}")
        rows.lines.append(line)
        rows.entity.append(" ".join(cell("entity").split()))
        rows.text.append(parts[col["text"]])
        rows.tweet_id.append(cell("tweet_id"))
        rows.related.append({"related": 1, "unrelated": 0}.get(filtering, -1))
        rows.polarity.append(polarity)
    return rows


def raw_outputs(
    classifier: Classifier, texts: Sequence[str], entity: str, batch_size: int = 32
) -> tuple[dict[str, np.ndarray], list[int]]:
    """The FlatBuffer's outputs (heads not applied) and the indices of the readable texts."""
    encoded, readable = encode_readable(classifier, [(text, entity) for text in texts])
    if not encoded:
        return {}, []
    return outputs_in_length_order(classifier.run, encoded, batch_size), readable


def _one_entity(pool: TsvRows, entity: str | None, path: Path) -> str:
    named = {entity_key(e): e for e in pool.entity if e}
    if entity is not None:
        if entity_key(entity) not in named:
            raise SelectError(
                f"{path} names no entity {entity!r}; it names {', '.join(sorted(named.values()))}"
            )
        return named[entity_key(entity)]
    if len(named) != 1:
        raise SelectError(
            f"{path} names {len(named)} entities ({', '.join(sorted(named.values())[:20])}); "
            "give --entity"
        )
    return next(iter(named.values()))


@dataclass
class Selection:
    entity: str
    chosen: list[int]  # pool row indices, in the order to label them
    pool_size: int  # candidate rows (entity's, readable, not already labelled)
    labelled: int  # DONE rows of the entity
    adapted: bool  # whether a head fitted on DONE steered the choice


def select_rows(
    model: str | os.PathLike[str],
    pool: TsvRows,
    n: int,
    *,
    done: TsvRows | None = None,
    entity: str | None = None,
    strategy: str = "active",
    seed: int = 13,
    pool_name: Path = Path("POOL"),
) -> Selection:
    brand = _one_entity(pool, entity, pool_name)
    key = entity_key(brand)
    known = set()
    done_rows: list[int] = []
    if done is not None:
        done_rows = [i for i, e in enumerate(done.entity) if entity_key(e) == key]
        known = {done.tweet_id[i] or done.text[i] for i in done_rows}
    candidates = [
        i
        for i, e in enumerate(pool.entity)
        if entity_key(e) == key and (pool.tweet_id[i] or pool.text[i]) not in known
    ]
    if not candidates:
        raise SelectError(f"no unlabelled tweet of {brand} left in {pool_name}")
    classifier = Classifier(ModelBundle.load(model))
    if not classifier.has_embedding:
        raise SelectError(f"{model}: its FlatBuffer has no {EMBEDDING_OUTPUT!r} output")
    out, readable = raw_outputs(classifier, [pool.text[i] for i in candidates], brand)
    if not readable:
        raise SelectError(f"no readable tweet of {brand} in {pool_name}")
    candidates = [candidates[i] for i in readable]
    logits, embedding = out[OUTPUT_NAME], out[EMBEDDING_OUTPUT]
    related_logits = out.get(RELATED_OUTPUT)
    labelled_embedding = None
    adapted = False
    if done is not None and done_rows:
        done_out, done_ok = raw_outputs(classifier, [done.text[i] for i in done_rows], brand)
        if done_ok:
            labelled_embedding = done_out[EMBEDDING_OUTPUT]
            rows = [done_rows[i] for i in done_ok]
            labels = list(classifier.labels)
            polarity = np.asarray(
                [labels.index(done.polarity[i]) if done.polarity[i] else -1 for i in rows]
            )
            related = np.asarray([done.related[i] for i in rows])
            polarity[related == 0] = -1
            try:
                fitted = fit_entity_head(
                    brand,
                    labelled_embedding,
                    done_out[OUTPUT_NAME],
                    done_out.get(RELATED_OUTPUT),
                    polarity,
                    related,
                    unlabelled=PoolOutputs(logits, embedding, related_logits),
                )
            except AdaptationError:
                fitted = None  # too few labels yet: select with the general model
            if fitted is not None:
                logits = logits + fitted.head.polarity(embedding)
                if related_logits is not None and fitted.head.related is not None:
                    related_logits = related_logits + fitted.head.related(embedding)
                adapted = True
    picked = select(
        PoolOutputs(logits, embedding, related_logits),
        n,
        strategy,
        labelled_embedding=labelled_embedding,
        seed=seed,
    )
    return Selection(
        brand, [candidates[i] for i in picked], len(candidates), len(done_rows), adapted
    )


def write_next(path: Path, pool: TsvRows, chosen: Sequence[int]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join([pool.header, *(pool.lines[i] for i in chosen)]) + "\n", "utf-8")
    tmp.replace(path)
    return path
