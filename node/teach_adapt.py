"""Adapt on the node: fit an entity's head from the labels given in the Teach view, and swap
it in only if cross-validation on those labels says it beats the model being served.

The steps (``NodeAdapter.adapt``), all off the inference thread:

1. the labels of the entity (node/teachstore.py), run through a second interpreter of the
   served bundle: raw outputs (``embedding``, logits), plus the served model's own answer
   (the raw logits with the entity's current head, if it has one);
2. ``edgemodel.adaptation.fit_entity_head`` fits a correction *on top of the served
   model*: its "before" is the served model, its "after" the correction by k-fold
   cross-validation; :meth:`FittedEntityHead.improved` (better on one task, worse on none)
   decides. Otherwise the node says why and keeps its model;
3. the new head (current head + correction) goes into a copy of the bundle, which must
   load and still answer the bundle's canary tweets of other entities;
4. it is installed into the provisioning state (provisioning/local.py: a slot, the
   previous model kept) and swapped in between two batches (``swap_classifier``), and a
   provisioning event records it. ``rollback`` restores the previous slot the same way.

A swap happens between batches, so no tweet is lost or labelled twice (node/service.py).
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.timestamps import utc_now
from edgemodel.adaptation import AdaptationError, fit_entity_head, write_adapted_bundle
from edgemodel.batching import encode_readable
from edgemodel.bundle import EMBEDDING_OUTPUT, OUTPUT_NAME, RELATED_OUTPUT, ModelBundle
from edgemodel.canaries import DEFAULT_CANARIES, Canary, check_canaries, compute_canaries
from edgemodel.defaults import MAX_BATCH_TOKENS, serving_threads
from edgemodel.entity_heads import Correction, EntityHead, entity_key
from edgemodel.inference import Classifier, Encoded
from node.batcher import bucket_by_length
from node.teachstore import POLARITIES, TeachStore

log = logging.getLogger("repedge.node")


class ModelSlots(Protocol):
    """Where adapted models are installed (provisioning/local.py's ``LocalSlots``)."""

    def install(
        self,
        bundle: ModelBundle,
        classifier: Classifier,
        canaries: Sequence[Canary],
        origin: dict[str, Any],
    ) -> tuple[str, Path]: ...

    def rollback(self) -> tuple[str, str, Path, str | None]: ...


class ServingNode(Protocol):
    def current_classifier(self) -> Classifier | None: ...

    def swap_classifier(self, classifier: Classifier) -> None: ...

    def record_event(self, event: dict[str, Any]) -> None: ...


@dataclass
class AdaptOutcome:
    ok: bool  # the node now serves a new model
    reason: str
    summary: str = ""
    seconds: float = 0.0
    model: dict[str, Any] | None = None
    fit: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "swapped": self.ok,
            "reason": self.reason,
            "summary": self.summary,
            "seconds": round(self.seconds, 2),
            "model": self.model,
            "fit": self.fit,
        }


def raw_outputs(classifier: Classifier, encoded: Sequence[Encoded]) -> dict[str, np.ndarray]:
    """The FlatBuffer's outputs for ``encoded`` in their order. Batched as the node batches
    (node/batcher.py: rows x padded length <= MAX_BATCH_TOKENS), so adapting needs no more
    interpreter working memory than serving: 32 rows of long tweets took 90 MiB more."""
    groups = bucket_by_length(list(range(len(encoded))), lambda i: len(encoded[i]),
                              MAX_BATCH_TOKENS)  # fmt: skip
    order: list[int] = []
    parts: dict[str, list[np.ndarray]] = {}
    for rows in groups:
        order.extend(rows)
        for name, value in classifier.run([encoded[i] for i in rows]).items():
            parts.setdefault(name, []).append(value)
    inverse = np.argsort(np.asarray(order))
    return {name: np.concatenate(chunks)[inverse] for name, chunks in parts.items()}


def _add(a: Correction | None, b: Correction | None) -> Correction | None:
    if a is None or b is None:
        return a or b
    return Correction(a.weight + b.weight, a.bias + b.bias)


class NodeAdapter:
    """Adapt and roll back a running node; one operation at a time."""

    def __init__(
        self,
        node: ServingNode,
        store: TeachStore,
        slots: ModelSlots,
        work_dir: Path,
        threads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.store = store
        self.slots = slots
        self.work_dir = Path(work_dir)
        # The serving rule when not given: a worker with more interpreter threads than
        # the served model would hold more working memory once it serves.
        self.threads = threads or serving_threads()
        self._clock = clock
        self._lock = threading.Lock()

    def adapt(self, entity: str) -> AdaptOutcome:
        started = self._clock()
        with self._lock:
            try:
                outcome = self._adapt(entity.strip())
            except (AdaptationError, ValueError) as exc:
                outcome = AdaptOutcome(False, f"not adapted: {exc}")
            except Exception as exc:  # whatever fails, the node keeps serving its model
                log.exception("adapting %s failed", entity)
                outcome = AdaptOutcome(False, f"adapting failed: {type(exc).__name__}: {exc}")
        outcome.seconds = self._clock() - started
        log.info("adapt %s: %s (%.1f s)", entity, outcome.reason, outcome.seconds)
        self.node.record_event(
            {
                "event": "adapted" if outcome.ok else "adapt_refused",
                "time": utc_now(),
                "entity": entity,
                "reason": outcome.reason,
                "model": outcome.model,
                "seconds": round(outcome.seconds, 2),
            }
        )
        return outcome

    def _adapt(self, entity: str) -> AdaptOutcome:
        if not entity:
            raise ValueError("give an entity")
        served = self.node.current_classifier()
        if served is None:
            raise ValueError("the node serves no model yet")
        answers = self.store.answers(entity)
        if not answers:
            known = ", ".join(e["entity"] for e in self.store.entities() if e["labels"]) or "none"
            raise ValueError(f"no labels for {entity!r} (entities with labels: {known})")
        bundle = served.bundle
        # A second interpreter: the served one belongs to the inference thread.
        worker = Classifier(bundle, num_threads=self.threads)
        if not worker.has_embedding:
            raise ValueError(f"{bundle.root}: the model has no {EMBEDDING_OUTPUT!r} output")
        encoded, readable = encode_readable(worker, [(a.text, a.entity) for a in answers])
        kept = [answers[i] for i in readable]
        if not encoded:
            raise ValueError(f"none of the {len(answers)} labelled texts is readable")
        raw = raw_outputs(worker, encoded)
        embedding = raw[EMBEDDING_OUTPUT]
        logits = raw[OUTPUT_NAME].astype(np.float64)
        related_logits = raw.get(RELATED_OUTPUT)
        current = worker.entity_heads.get(entity_key(entity))
        if current is not None:  # "before" is the model being served, head included
            logits = logits + current.polarity(embedding)
            if related_logits is not None and current.related is not None:
                related_logits = related_logits + current.related(embedding)
        labels = list(worker.labels)
        polarity = np.asarray(
            [labels.index(a.answer) if a.answer in POLARITIES else -1 for a in kept]
        )
        related = np.asarray([int(a.answer != "unrelated") for a in kept])
        fitted = fit_entity_head(entity, embedding, logits, related_logits, polarity, related)
        summary = fitted.summary()
        fit_json = dict(fitted.head.info or {})
        if not fitted.improved():
            return AdaptOutcome(
                False,
                "kept the current model: cross-validation on the labels does not say the "
                "adapted head is better (it must win on polarity or related and lose on neither)",
                summary,
                fit=fit_json,
            )
        head = EntityHead(
            entity=current.entity if current else fitted.head.entity,
            polarity=_add(current.polarity if current else None, fitted.head.polarity),
            related=_add(current.related if current else None, fitted.head.related),
            info={**fit_json, "labels": len(kept), "adapted_on_node": utc_now()},
        )
        return self._install(worker, head, entity, summary, fit_json)

    def _install(
        self,
        worker: Classifier,
        head: EntityHead,
        entity: str,
        summary: str,
        fit_json: dict[str, Any],
    ) -> AdaptOutcome:
        """Write, check, install and swap in the adapted bundle. The worker's interpreter
        serves it (same FlatBuffer, new heads): one interpreter loaded per adaptation."""
        parent = worker.bundle
        self.work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self.work_dir, prefix="adapt-"))
        try:
            written = write_adapted_bundle(
                parent, [head], folder / "bundle", adapted=[{"entity": entity, **fit_json}]
            )
            self._install_served_first(worker)
            worker.adopt(ModelBundle.load(written.root, variant=parent.variant))
            key = entity_key(entity)
            others = [
                Canary(c["text"], c["label"], c.get("entity"))
                for c in worker.bundle.manifest.canaries
                if entity_key(c.get("entity") or "") != key
            ]
            problems = check_canaries(worker, others)
            if problems:
                return AdaptOutcome(
                    False, "kept the current model: the adapted one fails canary tweets of "
                    "other entities: " + "; ".join(problems), summary, fit=fit_json,
                )  # fmt: skip
            canaries, _ = compute_canaries(worker, DEFAULT_CANARIES)
            origin = {"source": "node adapt", "entity": entity, "parent": parent.identity()}
            version, root = self.slots.install(worker.bundle, worker, canaries, origin)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        worker.adopt(ModelBundle.load(root, variant=parent.variant))  # the installed copy
        self.node.swap_classifier(worker)
        # (The inference loop releases the worker's mapped FlatBuffer pages after its
        # first batch, and the old interpreter's memory once it is unreferenced.)
        return AdaptOutcome(
            True,
            f"serving the adapted model (slot {version}): cross-validation on the labels "
            "says it is better",
            summary,
            model=worker.bundle.identity(),
            fit=fit_json,
        )

    def _install_served_first(self, served: Classifier) -> None:
        """Before the first adaptation of a model the node did not get from a slot
        (--model, the shipped one), install it as a slot too: rollback's way back."""
        installed = getattr(self.slots, "state_dir", None)
        if installed is not None and served.bundle.root.is_relative_to(Path(installed)):
            return
        canaries, _ = compute_canaries(served, DEFAULT_CANARIES)
        origin = {"source": "served before adapt"}
        self.slots.install(served.bundle, served, canaries, origin)

    def rollback(self) -> AdaptOutcome:
        started = self._clock()
        with self._lock:
            try:
                was, now, root, variant = self.slots.rollback()
                classifier = Classifier(ModelBundle.load(root, variant=variant), self.threads)
            except Exception as exc:
                outcome = AdaptOutcome(False, f"not rolled back: {exc}")
            else:
                self.node.swap_classifier(classifier)
                gc.collect()
                outcome = AdaptOutcome(
                    True,
                    f"rolled back from slot {was} to slot {now}",
                    model=classifier.bundle.identity(),
                )
        outcome.seconds = self._clock() - started
        self.node.record_event(
            {
                "event": "rolled_back" if outcome.ok else "rollback_refused",
                "time": utc_now(),
                "reason": outcome.reason,
                "model": outcome.model,
            }
        )
        return outcome
