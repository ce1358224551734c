"""The teach protocol: requests and responses over MQTT, under the node's own namespace.

Texts never go on a topic unless a user allowed to teach asks for them:

* requests arrive on ``repedge/nodes/<id>/teach/request``: JSON ``{"op", "reply_to",
  "request_id", ...}``;
* the answer goes to ``repedge/nodes/<id>/teach/response/<reply_to>`` (``reply_to``:
  1-64 of ``[A-Za-z0-9_-]``, chosen by the client), JSON ``{"request_id", "op", "ok",
  ...}`` or ``{"ok": false, "error": "..."}``.

broker/roles.py grants ``teach`` users write on the request topics and read on the
response topics, and denies the whole ``teach/`` subtree to every view-only role; a node
user reads and writes only its own. So who may read a text is decided by the broker's ACL.

Operations (``op``): ``entities``; ``next`` (entity, optional ``exclude`` digests): the
tweet to label next, chosen by the active-learning selector (edgemodel/selection.py) among
the kept texts nobody answered; ``answer`` (entity, digest, answer); ``undo`` (entity);
``stats`` (entity); ``export`` (optional entity): the labels as TSV; ``import`` (tsv);
``adapt`` (entity); ``rollback``; ``texts`` (entity, ``from`` and ``to`` in epoch seconds,
optional ``label``, ``related`` and ``limit``): the kept texts whose time (``created_at``,
else when labelled) is in [from, to), the tweets behind a point of the dashboard's history.

Requests are handled one at a time on a worker thread with a bounded queue (MQTT's
network thread only enqueues), so teaching never slows labelling down.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from typing import Any

import numpy as np

from edgemodel.adaptation import Accuracy, AdaptationError, AdaptConfig, fit_entity_head
from edgemodel.entity_heads import entity_key
from edgemodel.selection import PoolOutputs, select
from node.teach_adapt import NodeAdapter
from node.teachstore import POLARITIES, Answer, TeachStore, TeachStoreError

log = logging.getLogger("repedge.node")

REPLY_TO = re.compile(r"[A-Za-z0-9_-]{1,64}")
QUEUE = 32
TEXTS_LIMIT = 50  # tweets per `texts` answer unless asked otherwise
TEXTS_MAX = 500
# The running estimate of an adapted head refits on every answer: a lighter grid than
# `node adapt` (which decides a swap) keeps it well under a second on 2 cores.
ESTIMATE_CONFIG = AdaptConfig(l2_grid=(1e-2, 1e-1), folds=5, steps=120)
ESTIMATE_MIN_LABELS = 10


def request_topic(node_id: str) -> str:
    return f"repedge/nodes/{node_id}/teach/request"


def response_topic(node_id: str, reply_to: str) -> str:
    return f"repedge/nodes/{node_id}/teach/response/{reply_to}"


class TeachError(ValueError):
    """A request the node cannot answer; its message goes back to the client."""


def _accuracy_json(acc: Accuracy | None) -> dict[str, Any] | None:
    return None if acc is None or acc.total == 0 else acc.to_json()


def model_accuracy(answers: list[Answer]) -> dict[str, Any]:
    """How the model's guesses (as they were when each tweet was answered) fare."""
    polarity = [a for a in answers if a.answer in POLARITIES and a.guess]
    related = [a for a in answers if a.guess_related_score is not None]
    return {
        "polarity": _accuracy_json(
            Accuracy(sum(a.guess == a.answer for a in polarity), len(polarity))
        ),
        "related": _accuracy_json(
            Accuracy(
                sum((a.guess_related_score >= 0.5) == (a.answer != "unrelated") for a in related),
                len(related),
            )
        ),
    }


def adapted_estimate(entity: str, answers: list[Answer], labels: list[str]) -> dict[str, Any]:
    """The adapted head by cross-validation on the answers so far (from the scores and
    embeddings kept with them; log-probabilities stand in for the logits, which only
    shifts each row by a constant)."""
    usable = [a for a in answers if a.embedding is not None and a.guess_scores]
    if len(usable) < ESTIMATE_MIN_LABELS:
        return {"note": f"from {ESTIMATE_MIN_LABELS} labels on", "polarity": None, "related": None}
    embedding = np.stack([a.embedding for a in usable])
    probs = np.asarray([[a.guess_scores.get(lab, 0.0) for lab in labels] for a in usable])
    logits = np.log(np.clip(probs, 1e-6, 1.0))
    related_logits = None
    if all(a.guess_related_score is not None for a in usable):
        r = np.clip(np.asarray([a.guess_related_score for a in usable]), 1e-6, 1 - 1e-6)
        related_logits = np.log(np.stack([r, 1 - r], axis=1))  # RELATED_LABELS order
    polarity = np.asarray(
        [labels.index(a.answer) if a.answer in POLARITIES else -1 for a in usable]
    )
    related = np.asarray([int(a.answer != "unrelated") for a in usable])
    try:
        fitted = fit_entity_head(
            entity, embedding, logits, related_logits, polarity, related, ESTIMATE_CONFIG
        )
    except AdaptationError as exc:
        return {"note": str(exc), "polarity": None, "related": None}
    return {
        "polarity": _accuracy_json(fitted.polarity.after),
        "related": _accuracy_json(fitted.related.after if fitted.related else None),
        "improved": fitted.improved(),
    }


class TeachServer:
    """Answers teach requests for one node."""

    def __init__(
        self,
        node_id: str,
        store: TeachStore,
        publish: Any,  # (topic, payload, qos) -> bool, e.g. MqttShell.publish
        adapter: NodeAdapter | None,
        labels: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.publish = publish
        self.adapter = adapter
        self.labels = labels or list(POLARITIES)
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
        self._thread = threading.Thread(target=self._run, name="teach", daemon=True)

    @property
    def subscription(self) -> str:
        return request_topic(self.node_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(2.0)

    def on_request(self, topic: str, payload: bytes) -> None:
        """On MQTT's network thread: enqueue only."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            log.warning("teach request dropped: %d requests already waiting", QUEUE)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._serve(item[1])
            except Exception:
                log.exception("teach request failed")

    def _serve(self, payload: bytes) -> None:
        try:
            request = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            log.info("teach request is not JSON; ignored")
            return
        if not isinstance(request, dict):
            return
        reply_to = request.get("reply_to")
        if not isinstance(reply_to, str) or not REPLY_TO.fullmatch(reply_to):
            log.info("teach request without a valid reply_to; ignored")
            return
        op = request.get("op")
        response: dict[str, Any] = {"request_id": request.get("request_id"), "op": op}
        try:
            response |= {"ok": True, **self.handle(request)}
        except (TeachError, TeachStoreError) as exc:
            response |= {"ok": False, "error": str(exc)}
        self.publish(response_topic(self.node_id, reply_to), json.dumps(response), 1)

    # -- operations -----------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "entities":
            return {"entities": self.store.entities()}
        if op == "export":
            return {"tsv": self.store.export_tsv(self._entity(request, required=False))}
        if op == "import":
            tsv = request.get("tsv")
            if not isinstance(tsv, str):
                raise TeachError("import needs 'tsv', the text of a label file")
            added, present = self.store.import_tsv(tsv)
            return {"added": added, "present": present}
        if op == "rollback":
            return self._adapter().rollback().to_json()
        entity = self._entity(request)
        if op == "next":
            exclude = request.get("exclude") or []
            if not isinstance(exclude, list):
                raise TeachError("'exclude' must be a list of digests")
            return {
                "tweet": self.next_tweet(entity, [str(d) for d in exclude]),
                **self.stats(entity),
            }
        if op == "answer":
            digest, answer = request.get("digest"), request.get("answer")
            if not isinstance(digest, str) or not isinstance(answer, str):
                raise TeachError("answer needs 'digest' and 'answer'")
            self.store.answer(entity, digest, answer)
            return self.stats(entity)
        if op == "undo":
            undone = self.store.undo(entity)
            tweet = self.store.text(entity, undone.digest) if undone else None
            return {
                "undone": None
                if undone is None
                else {"digest": undone.digest, "answer": undone.answer},
                "tweet": tweet.to_json() if tweet else None,
                **self.stats(entity),
            }
        if op == "stats":
            return self.stats(entity)
        if op == "adapt":
            return self._adapter().adapt(entity).to_json()
        if op == "texts":
            return self.texts(entity, request)
        raise TeachError(f"unknown op {op!r}")

    def _adapter(self) -> NodeAdapter:
        if self.adapter is None:
            raise TeachError("this node cannot adapt (no model slots configured)")
        return self.adapter

    @staticmethod
    def _entity(request: dict[str, Any], required: bool = True) -> str | None:
        entity = request.get("entity")
        if entity is None and not required:
            return None
        if not isinstance(entity, str) or not entity.strip():
            raise TeachError("give an 'entity'")
        return entity.strip()

    def next_tweet(self, entity: str, exclude: list[str]) -> dict[str, Any] | None:
        """The kept tweet to ask about next: active learning over the unanswered ones."""
        pool = self.store.candidates(entity, exclude)
        if not pool:
            return None
        usable = [k for k in pool if k.embedding is not None]
        if len(usable) < len(pool):  # texts kept without an embedding: most uncertain first
            return min(pool, key=lambda k: max(k.scores.values())).to_json()
        probs = np.asarray([[k.scores.get(lab, 0.0) for lab in self.labels] for k in usable])
        related = None
        if all(k.related_score is not None for k in usable):
            r = np.clip(np.asarray([k.related_score for k in usable]), 1e-6, 1 - 1e-6)
            related = np.log(np.stack([r, 1 - r], axis=1))
        outputs = PoolOutputs(
            np.log(np.clip(probs, 1e-6, 1.0)), np.stack([k.embedding for k in usable]), related
        )
        done = [
            a.embedding
            for a in self.store.answers(entity, with_skips=True)
            if a.embedding is not None
        ]
        (pick,) = select(outputs, 1, "active", np.stack(done) if done else None)
        return usable[pick].to_json()

    def texts(self, entity: str, request: dict[str, Any]) -> dict[str, Any]:
        """The kept texts of ``entity`` in [from, to), with how many this node keeps for it
        and since when, so an empty answer says whether the range is older than the store."""
        start, end = request.get("from"), request.get("to")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, end)):
            raise TeachError("texts needs 'from' and 'to' (epoch seconds)")
        if not start < end:
            raise TeachError("texts needs 'from' before 'to'")
        label, related = request.get("label"), request.get("related")
        if label is not None and label not in self.labels:
            raise TeachError(f"'label' must be one of {', '.join(self.labels)}")
        if related is not None and not isinstance(related, bool):
            raise TeachError("'related' must be true or false")
        limit = request.get("limit", TEXTS_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= TEXTS_MAX:
            raise TeachError(f"'limit' must be a whole number from 1 to {TEXTS_MAX}")
        found, total = self.store.texts_between(entity, start, end, label, related, limit)
        kept, oldest = self.store.span(entity)
        return {
            "entity": entity,
            "tweets": [t.to_json() for t in found],
            "total": total,
            "kept": kept,
            "oldest": oldest,
            "keeps_texts": self.store.max_per_entity > 0,
        }

    def stats(self, entity: str) -> dict[str, Any]:
        answers = self.store.answers(entity, with_skips=True)
        labelled = [a for a in answers if a.answer != "skip"]
        return {
            "entity": entity,
            "counts": {
                "labels": len(labelled),
                "skipped": len(answers) - len(labelled),
                "unrelated": sum(a.answer == "unrelated" for a in labelled),
                "remaining": len(self.store.candidates(entity)),
            },
            "current_model": model_accuracy(labelled),
            "adapted_cv": adapted_estimate(entity, labelled, self.labels),
            "entity_key": entity_key(entity),
        }
