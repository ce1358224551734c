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
        return {
            "weight": np.round(self.weight, 7).tolist(),
            "bias": np.round(self.bias, 7).tolist(),
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
    path: str | os.PathLike[str], num_labels: int, num_related: int = 2
) -> dict[str, EntityHead]:
    """Read and check ``entity_heads.json``; keys are :func:`entity_key` of the entity."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EntityHeadsError(f"{path}: cannot read entity heads ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != ENTITY_HEADS_FORMAT:
        raise EntityHeadsError(f"{path}: not a {ENTITY_HEADS_FORMAT} file")
    dim = data.get("embedding_dim")
    heads_data = data.get("heads")
    if not isinstance(dim, int) or dim <= 0 or not isinstance(heads_data, dict):
        raise EntityHeadsError(f"{path}: needs a positive 'embedding_dim' and a 'heads' object")
    heads = {}
    for key, head in heads_data.items():
        where = f"{path}: head {key!r}"
        if not isinstance(head, dict) or not isinstance(head.get("entity"), str):
            raise EntityHeadsError(f"{where}: needs an 'entity' name")
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
