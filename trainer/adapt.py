"""`trainer adapt`: run a brand's labelled tweets through a bundle, fit its head, write a bundle.

The fitting itself is :mod:`edgemodel.adaptation` (numpy only, what a node calls to adapt
on-device); this module only reads the labelled tweets, runs them through the bundle's
FlatBuffer with the node's own inference code (:meth:`edgemodel.inference.Classifier.run`,
heads not applied) and writes the adapted bundle. The FlatBuffer itself is not touched,
so the new bundle serves every other entity exactly as before, and it signs and provisions
like any bundle. Needs no TensorFlow: a few seconds on 2 cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemodel.adaptation import (
    AdaptationError,
    AdaptConfig,
    FittedEntityHead,
    config_record,
    fit_entity_head,
    write_adapted_bundle,
)
from edgemodel.batching import encode_readable, outputs_in_length_order
from edgemodel.bundle import EMBEDDING_OUTPUT, OUTPUT_NAME, RELATED_OUTPUT, ModelBundle
from edgemodel.data import Example
from edgemodel.entity_heads import entity_key
from edgemodel.inference import Classifier

__all__ = ["AdaptConfig", "AdaptError", "BrandData", "adapt_bundle", "brand_outputs"]


class AdaptError(AdaptationError):
    """The data cannot adapt this bundle (no entity, too few tweets, no embedding output)."""


@dataclass
class BrandData:
    """The general model's raw outputs on a brand's labelled tweets."""

    embedding: np.ndarray
    logits: np.ndarray
    related_logits: np.ndarray | None
    polarity: np.ndarray  # label index, -1 for unrelated tweets
    related: np.ndarray  # 1/0, -1 where the data has no filtering label
    unreadable: int = 0

    def fit(self, entity: str, config: AdaptConfig | None = None) -> FittedEntityHead:
        return fit_entity_head(
            entity,
            self.embedding,
            self.logits,
            self.related_logits,
            self.polarity,
            self.related,
            config,
        )


def brand_outputs(
    classifier: Classifier, examples: Sequence[Example], entity: str, batch_size: int = 32
) -> BrandData:
    """Run ``examples`` (all of one entity) through the FlatBuffer, heads not applied."""
    if not classifier.has_embedding:
        raise AdaptError(
            f"{classifier.bundle.root}: its FlatBuffer has no {EMBEDDING_OUTPUT!r} output "
            "(exported before per-entity heads existed); re-export it with this trainer"
        )
    encoded, readable = encode_readable(classifier, [(e.text, entity) for e in examples])
    kept = [examples[i] for i in readable]
    if not encoded:
        raise AdaptError("no readable tweet in the data")
    merged = outputs_in_length_order(classifier.run, encoded, batch_size)
    labels = list(classifier.labels)
    return BrandData(
        embedding=merged[EMBEDDING_OUTPUT],
        logits=merged[OUTPUT_NAME],
        related_logits=merged.get(RELATED_OUTPUT),
        polarity=np.asarray([labels.index(e.label) if e.label else -1 for e in kept]),
        related=np.asarray([-1 if e.related is None else int(e.related) for e in kept]),
        unreadable=len(examples) - len(kept),
    )


def adapt_bundle(
    bundle_path: str | os.PathLike[str],
    examples: Sequence[Example],
    out_dir: str | os.PathLike[str],
    entity: str | None = None,
    version: str | None = None,
    config: AdaptConfig | None = None,
    each_entity: bool = False,
    name: str | None = None,
) -> tuple[ModelBundle, list[FittedEntityHead]]:
    """A copy of the bundle (all variants) with a head for ``entity`` added or replaced;
    with ``each_entity``, one head per entity the data names (tweets without one unused).

    A head is fitted on the outputs of the bundle's default variant; the other variants
    carry the same head (their embeddings agree to quantization noise).
    """
    config = config or AdaptConfig()
    started = time.monotonic()
    parent = ModelBundle.load(bundle_path)
    if not parent.manifest.entity_input:
        raise AdaptError(f"{parent.root}: this model does not read entities")
    groups = group_by_entity(examples, entity, each_entity)
    classifier = Classifier(parent)
    fitted: list[FittedEntityHead] = []
    records: list[dict] = []
    for brand, mine in groups.items():
        try:
            data = brand_outputs(classifier, mine, brand)
            result = data.fit(brand, config)
        except AdaptationError as exc:
            if not each_entity:
                raise AdaptError(str(exc)) from None
            print(f"skipped {brand}: {exc}", flush=True)
            continue
        fitted.append(result)
        records.append(
            {
                "entity": result.head.entity,
                "tweets": len(mine),
                "unreadable": data.unreadable,
                "parent_version": parent.manifest.version,
                "config": config_record(config),
                **dict(result.head.info or {}),
            }
        )
    if not fitted:
        raise AdaptError("no entity had enough labelled tweets for a head")
    records[-1]["seconds"] = round(time.monotonic() - started, 1)
    bundle = write_adapted_bundle(
        parent,
        [f.head for f in fitted],
        out_dir,
        version=version,
        name=name,
        adapted=records,
    )
    return bundle, fitted


def group_by_entity(
    examples: Sequence[Example], entity: str | None, each_entity: bool
) -> dict[str, list[Example]]:
    """The tweets to fit each head on. With ``entity``, the data's tweets of that entity
    (and those naming none); an entity the data does not name is an error."""
    named: dict[str, str] = {}  # entity_key -> first spelling seen
    for e in examples:
        if e.entity and e.entity.strip():
            named.setdefault(entity_key(e.entity), " ".join(e.entity.split()))
    if each_entity:
        if entity:
            raise AdaptError("give --entity or --each-entity, not both")
        groups: dict[str, list[Example]] = {}
        for e in examples:
            if e.entity and e.entity.strip():
                groups.setdefault(named[entity_key(e.entity)], []).append(e)
        if not groups:
            raise AdaptError("--each-entity: the data names no entity")
        return groups
    if entity is None:
        if len(named) != 1:
            raise AdaptError(
                f"the data names {len(named)} entities ({_listing(named)}); "
                "give --entity, or data of one brand, or --each-entity"
            )
        entity = next(iter(named.values()))
    entity = " ".join(entity.split())
    if not entity:
        raise AdaptError("the entity name is empty")
    key = entity_key(entity)
    if named and key not in named:
        raise AdaptError(f"the data names no entity {entity!r}; it names {_listing(named)}")
    mine = [e for e in examples if not e.entity or entity_key(e.entity) == key]
    return {named.get(key, entity): mine}  # the data's spelling of the name


def _listing(named: dict[str, str], limit: int = 20) -> str:
    names = sorted(named.values(), key=str.casefold)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe(fitted: Sequence[FittedEntityHead]) -> str:
    """Before / after accuracies of each fitted head, in words."""
    return "\n".join(f.summary() for f in fitted)


def write_curve(path: Path, points: Sequence[dict], entity: str) -> Path:
    """Draw a learning curve (see :func:`learning_curve`) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for task in ("polarity", "related"):
        pts = [p for p in points if p.get(task)]
        if not pts:
            continue
        xs = [p["n"] for p in pts]
        ys = [p[task]["accuracy"] for p in pts]
        lo = [p[task]["accuracy"] - p[task]["low"] for p in pts]
        hi = [p[task]["high"] - p[task]["accuracy"] for p in pts]
        line = ax.errorbar(
            xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{task}, adapted head"
        )
        base = pts[-1][task]["before"]
        color = line.lines[0].get_color()
        ax.axhline(base, color=color, linestyle="--", alpha=0.7, label=f"{task}, current model")
    ax.set_xlabel("labelled tweets used")
    ax.set_ylabel("cross-validated accuracy")
    ax.set_title(f"{entity}: learning curve of the adapted head")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(
    data: BrandData, entity: str, config: AdaptConfig | None = None, steps: int = 5
) -> list[dict]:
    """Cross-validated accuracy of heads fitted on growing prefixes of a fixed shuffle of
    the labels (the last point uses them all): is labelling more still paying off?"""
    config = config or AdaptConfig()
    n = len(data.polarity)
    order = np.random.default_rng(config.seed).permutation(n)
    sizes = sorted({max(10, round(n * (i + 1) / steps)) for i in range(steps)})
    points = []
    for size in sizes:
        rows = order[: min(size, n)]
        try:
            fitted = fit_entity_head(
                entity,
                data.embedding[rows],
                data.logits[rows],
                None if data.related_logits is None else data.related_logits[rows],
                data.polarity[rows],
                data.related[rows],
                config,
            )
        except AdaptationError:
            continue
        point: dict = {"n": len(rows)}
        for task, fit in (("polarity", fitted.polarity), ("related", fitted.related)):
            if fit is not None:
                point[task] = {**fit.after.to_json(), "before": fit.before.value}
        points.append(point)
    return points
