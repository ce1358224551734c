"""Per-entity heads: a brand's own correction on top of a bundle's general heads.

``trainer adapt`` fits, for one entity, a small linear correction that reads the
FlatBuffer's pooled ``embedding`` output and is added to its polarity (and related)
logits::

    logits = general_logits + embedding @ weight + bias

A zero correction is the general model, so a brand with few labelled tweets stays close
to it. The corrections live in ``entity_heads.json`` beside the FlatBuffer, are listed
with their sha256 in the manifest, and are applied by :class:`edgemodel.inference.Classifier`
for tweets whose entity matches (case-insensitively); other tweets are untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENTITY_HEADS_FILE = "entity_heads.json"
ENTITY_HEADS_FORMAT = "repedge-entity-heads/1"

# Limits that `trainer adapt`, `provision bundle`, `provision install` and `node start` all
# apply through load_entity_heads, so that nothing is signed that a node would refuse.
# A site adapts a handful of brands (RepLab 2013 has 61 entities). The byte cap admits the
# entity cap at a 512-wide embedding with both heads, also as written before save_entity_heads
# shortened its numbers; benchmarks/heads_load.py measures what loading that costs.
MAX_ENTITY_HEADS = 128
MAX_HEADS_FILE_BYTES = 8 << 20
MAX_ENTITY_CHARS = 200
# A fitted correction is a regularised logistic regression on a sentence vector: its
# weights are of order 1. Far beyond this bound a weight is corruption or an attack (3e38
# overflows float32 in the first product and gives NaN scores).
MAX_ABS_WEIGHT = 1e4


class EntityHeadsError(ValueError):
    """An entity heads file is malformed or does not fit the model."""


def entity_key(entity: str) -> str:
    """How entities are matched: trimmed, case-folded, inner whitespace collapsed."""
    return " ".join(entity.split()).casefold()


@dataclass(frozen=True)
class Correction:
    """A linear correction of one head's logits: ``embedding @ weight + bias``."""

    weight: np.ndarray  # [embedding_dim, num_classes]
    bias: np.ndarray  # [num_classes]

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        return embedding @ self.weight + self.bias

    def to_json(self) -> dict[str, Any]:
        # Rounded in float64: a float32 rounded to 7 decimals prints as its float64 value
        # (0.12345670014619827), twice the bytes of 0.1234567.
        return {
            "weight": np.round(self.weight.astype(np.float64), 7).tolist(),
            "bias": np.round(self.bias.astype(np.float64), 7).tolist(),
        }

    @classmethod
    def from_json(cls, data: Any, dim: int, classes: int, where: str) -> Correction:
        try:
            weight = np.asarray(data["weight"], np.float32)
            bias = np.asarray(data["bias"], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise EntityHeadsError(f"{where}: needs numeric 'weight' and 'bias' ({exc})") from exc
        if weight.shape != (dim, classes) or bias.shape != (classes,):
            raise EntityHeadsError(
                f"{where}: weight {weight.shape} / bias {bias.shape}, expected "
                f"({dim}, {classes}) / ({classes},)"
            )
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise EntityHeadsError(f"{where}: weights must be finite")
        largest = max(float(np.abs(weight).max(initial=0)), float(np.abs(bias).max(initial=0)))
        if largest > MAX_ABS_WEIGHT:
            raise EntityHeadsError(
                f"{where}: a weight of magnitude {largest:.3g} is beyond the sane bound "
                f"{MAX_ABS_WEIGHT:g}"
            )
        return cls(weight, bias)


@dataclass(frozen=True)
class EntityHead:
    entity: str
    polarity: Correction
    related: Correction | None = None
    # What it was fitted on, for the model card and telemetry.
    info: Mapping[str, Any] | None = None


def save_entity_heads(
    path: str | os.PathLike[str], heads: Mapping[str, EntityHead], embedding_dim: int
) -> Path:
    path = Path(path)
    data = {
        "format": ENTITY_HEADS_FORMAT,
        "embedding_dim": embedding_dim,
        "heads": {
            entity_key(h.entity): {
                "entity": h.entity,
                "polarity": h.polarity.to_json(),
                "related": h.related.to_json() if h.related is not None else None,
                "info": dict(h.info or {}),
            }
            for h in heads.values()
        },
    }
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_entity_heads(
    path: str | os.PathLike[str],
    num_labels: int,
    num_related: int = 2,
    embedding_dim: int | None = None,
) -> dict[str, EntityHead]:
    """Read and check ``entity_heads.json``; keys are :func:`entity_key` of the entity.

    The one validation of heads that trainer, provisioning and node share: size and
    entity-count caps, JSON shape, finite weights within :data:`MAX_ABS_WEIGHT`, and with
    ``embedding_dim`` (the width of the FlatBuffer's ``embedding`` output) a width that
    fits the model. Raises :class:`EntityHeadsError` with a one-line reason.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_HEADS_FILE_BYTES + 1)
    except OSError as exc:
        raise EntityHeadsError(f"{path}: cannot read entity heads ({exc})") from exc
    if len(raw) > MAX_HEADS_FILE_BYTES:
        raise EntityHeadsError(
            f"{path}: larger than the {MAX_HEADS_FILE_BYTES} bytes a heads file may have"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise EntityHeadsError(f"{path}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise EntityHeadsError(f"{path}: cannot read entity heads ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != ENTITY_HEADS_FORMAT:
        raise EntityHeadsError(f"{path}: not a {ENTITY_HEADS_FORMAT} file")
    dim = data.get("embedding_dim")
    heads_data = data.get("heads")
    if (
        not isinstance(dim, int)
        or isinstance(dim, bool)
        or dim <= 0
        or not isinstance(heads_data, dict)
    ):
        raise EntityHeadsError(f"{path}: needs a positive 'embedding_dim' and a 'heads' object")
    if embedding_dim is not None and dim != embedding_dim:
        raise EntityHeadsError(
            f"{path}: heads read a {dim}-wide embedding, the model's embedding output is "
            f"{embedding_dim} wide (heads fitted for another model)"
        )
    if len(heads_data) > MAX_ENTITY_HEADS:
        raise EntityHeadsError(
            f"{path}: {len(heads_data)} entity heads, more than the {MAX_ENTITY_HEADS} allowed"
        )
    heads = {}
    for key, head in heads_data.items():
        where = f"{path}: head {key[:MAX_ENTITY_CHARS]!r}"
        if not isinstance(head, dict) or not isinstance(head.get("entity"), str):
            raise EntityHeadsError(f"{where}: needs an 'entity' name")
        if not 0 < len(head["entity"]) <= MAX_ENTITY_CHARS:
            raise EntityHeadsError(f"{where}: entity names have 1 to {MAX_ENTITY_CHARS} characters")
        if entity_key(head["entity"]) != key:
            raise EntityHeadsError(f"{where}: key does not match entity {head['entity']!r}")
        related = head.get("related")
        heads[key] = EntityHead(
            entity=head["entity"],
            polarity=Correction.from_json(head.get("polarity"), dim, num_labels, where),
            related=(
                None
                if related is None
                else Correction.from_json(related, dim, num_related, f"{where} related")
            ),
            info=head.get("info") if isinstance(head.get("info"), dict) else None,
        )
    return heads
