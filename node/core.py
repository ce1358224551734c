"""The node's pure batch step: tweets in, typed records out. No MQTT, no threads.

``BatchStep.run(batch, classifier)`` takes inbound items (the payload bytes and an opaque
handle the caller uses to acknowledge the message) and returns one :class:`Outbound`
record per item, in a :class:`BatchResult`:

* ``label``: a new label record for the labels topic;
* ``error``: a new error record for the errors topic (bad input, or a tweet the node
  could not process);
* ``duplicate``: the record stored for this tweet when it was first seen, verbatim (a
  redelivery of identical content; see node/dedup.py).

Every inbound item ends in exactly one record, whatever its bytes (tests/test_node_core.py
checks this with hypothesis). Should the batch as a whole raise (a tokenizer or SQLite
error on one tweet, say), it is run again tweet by tweet, so one poison tweet gets an
``internal_error`` record and cannot hold the good ones back.

The store is anything with ``lookup`` and ``put_if_absent`` as in node/dedup.py (the node
passes a :class:`~node.dedup.ResilientStore`); ``None`` runs without deduplication.
Records are stored before the caller publishes them, so whatever reaches the broker can
be repeated verbatim. The caller (node/service.py) publishes each record and acks its
inbound once the broker has the record (node/ledger.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgemodel.defaults import MAX_BATCH_TOKENS
from edgemodel.inference import EmptyTextError, Encoded, Prediction
from node.batcher import bucket_by_length
from node.messages import (
    DEFAULT_MAX_BYTES,
    BadInput,
    Tweet,
    dumps,
    error_record,
    label_record,
    parse_tweet,
)

log = logging.getLogger("repedge.node")

RecordKind = Literal["label", "error", "duplicate"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received payload. ``handle`` is the caller's (the core never looks at it);
    ``received`` is a ``time.monotonic()`` reading, for latency."""

    payload: bytes
    handle: Any = None
    received: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record to publish; it completes ``inbound``."""

    kind: RecordKind
    topic: str
    payload: str
    inbound: Inbound
    tweet_id: str | None = None
    reason: str | None = None  # error records: the machine-readable reason


@dataclass
class BatchResult:
    records: list[Outbound]
    ran_inference: bool = False
    labelled: int = 0
    errors: int = 0
    duplicates: int = 0
    id_reused: int = 0  # tweets whose id the store holds for other content
    retried_singly: bool = False  # the batch raised and was redone tweet by tweet
    latencies_ms: list[float] = field(default_factory=list)
    # The tweets labelled in this batch with the model's answer (what the teach text
    # store keeps); duplicates and errors are not in it.
    labelled_tweets: list[tuple[Tweet, Prediction]] = field(default_factory=list)


@dataclass(frozen=True)
class CoreConfig:
    node_id: str
    labels_topic: str = "repedge/labels"
    errors_topic: str = "repedge/errors"
    max_bytes: int = DEFAULT_MAX_BYTES
    default_entity: str | None = None
    # Rows x padded length per interpreter call; see batcher.bucket_by_length.
    max_batch_tokens: int = MAX_BATCH_TOKENS


class ClassifierLike(Protocol):
    """What the core needs of edgemodel.inference.Classifier."""

    bundle: Any

    def encode(self, text: str, entity: str | None = None) -> Encoded: ...

    def predict(self, batch: Sequence[Encoded]) -> list[Prediction]: ...


class StoreLike(Protocol):
    def lookup(
        self, keys: Iterable[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], tuple[str, str]], set[str]]: ...

    def put_if_absent(
        self, items: Iterable[tuple[str, str, str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]: ...


def payload_digest(payload: bytes) -> str:
    """The store key's digest for a tweet that could not be parsed into content."""
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class _Draft:
    """A record before storing: its store key, if it has one."""

    out: Outbound
    key: tuple[str, str] | None = None
    labelled: tuple[Tweet, Prediction] | None = None


class BatchStep:
    def __init__(
        self,
        config: CoreConfig,
        store: StoreLike | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock

    def run(self, batch: Sequence[Inbound], classifier: ClassifierLike) -> BatchResult:
        """One record per item of ``batch``; never raises for what is in the payloads."""
        try:
            return self._run(batch, classifier)
        except Exception as exc:
            if len(batch) == 1:
                return self._unprocessable(batch[0], exc)
            log.exception("batch of %d failed; retrying tweet by tweet", len(batch))
        total = BatchResult(records=[], retried_singly=True)
        for item in batch:
            try:
                one = self._run([item], classifier)
            except Exception as exc:
                one = self._unprocessable(item, exc)
            total.records.extend(one.records)
            total.ran_inference |= one.ran_inference
            total.labelled += one.labelled
            total.errors += one.errors
            total.duplicates += one.duplicates
            total.id_reused += one.id_reused
            total.latencies_ms.extend(one.latencies_ms)
            total.labelled_tweets.extend(one.labelled_tweets)
        return total

    def _unprocessable(self, item: Inbound, exc: Exception) -> BatchResult:
        log.error("tweet of %d bytes could not be processed", len(item.payload), exc_info=exc)
        detail = f"{type(exc).__name__}: {exc}"[:200].encode("ascii", "replace").decode()
        out = self._error(item, None, "internal_error", detail)
        return BatchResult(records=[out], errors=1)

    def _run(self, batch: Sequence[Inbound], classifier: ClassifierLike) -> BatchResult:
        cfg = self.config
        drafts: list[_Draft] = []
        parsed: list[tuple[Inbound, Tweet]] = []
        for item in batch:
            try:
                tweet = parse_tweet(item.payload, cfg.max_bytes, cfg.default_entity)
            except BadInput as exc:
                out = self._error(item, exc.tweet_id, exc.reason, exc.detail)
                key = (exc.tweet_id, payload_digest(item.payload)) if exc.tweet_id else None
                drafts.append(_Draft(out, key))
            else:
                parsed.append((item, tweet))

        found, reused = {}, set()
        if self.store is not None and parsed:
            found, reused = self.store.lookup((t.id, t.digest) for _, t in parsed)
        result = BatchResult(records=[])
        to_classify: list[tuple[Inbound, Tweet, Encoded]] = []
        for item, tweet in parsed:
            key = (tweet.id, tweet.digest)
            stored = found.get(key)
            if stored is not None:
                topic, payload = stored
                drafts.append(_Draft(Outbound("duplicate", topic, payload, item, tweet.id)))
                continue
            if tweet.id in reused:
                result.id_reused += 1
                log.info("id %r reused for other content: labelled afresh", tweet.id[:64])
            try:
                encoded = classifier.encode(tweet.text, tweet.entity)
            except EmptyTextError as exc:
                error = self._error(item, tweet.id, "no_known_tokens", str(exc), tweet)
                drafts.append(_Draft(error, key))
                continue
            to_classify.append((item, tweet, encoded))

        model = classifier.bundle.identity()
        groups = bucket_by_length(to_classify, lambda entry: len(entry[2]), cfg.max_batch_tokens)
        for group in groups:
            predictions = self._predict([encoded for _, _, encoded in group], classifier)
            done = self._clock()
            for (item, tweet, _), prediction in zip(group, predictions, strict=True):
                if isinstance(prediction, Exception):  # a broken model must not stop the node
                    detail = str(prediction)[:200]
                    error = self._error(item, tweet.id, "inference_failed", detail, tweet)
                    drafts.append(_Draft(error, (tweet.id, tweet.digest)))
                    continue
                if not prediction.finite:
                    # An overflowed output is no answer; this tweet alone gets an error.
                    detail = f"the model's output for this tweet is not finite: {prediction.scores}"
                    error = self._error(item, tweet.id, "non_finite_output", detail[:200], tweet)
                    drafts.append(_Draft(error, (tweet.id, tweet.digest)))
                    continue
                latency = (done - item.received) * 1000
                record = label_record(tweet, prediction, model, cfg.node_id, latency)
                out = Outbound("label", cfg.labels_topic, dumps(record), item, tweet.id)
                drafts.append(_Draft(out, (tweet.id, tweet.digest), (tweet, prediction)))
                result.latencies_ms.append(latency)
        result.ran_inference = bool(groups)

        # Store first, publish second: whatever reaches the broker can be repeated verbatim.
        storable = [d for d in drafts if d.key is not None]
        stored_now: dict[tuple[str, str], tuple[str, str]] = {}
        if self.store is not None and storable:
            stored_now = self.store.put_if_absent(
                (*d.key, d.out.topic, d.out.payload)
                for d in storable
                if d.key is not None  # (for the type checker)
            )
        order = {id(item): n for n, item in enumerate(batch)}
        for draft in sorted(drafts, key=lambda d: order[id(d.out.inbound)]):
            out = draft.out
            if draft.key is not None and draft.key in stored_now:
                topic, payload = stored_now[draft.key]
                if payload != out.payload:  # an earlier delivery's record won the race
                    out = Outbound("duplicate", topic, payload, out.inbound, out.tweet_id)
            result.records.append(out)
            if out.kind == "label":
                result.labelled += 1
                if draft.labelled is not None:
                    result.labelled_tweets.append(draft.labelled)
            elif out.kind == "error":
                result.errors += 1
            else:
                result.duplicates += 1
        return result

    @staticmethod
    def _predict(
        encoded: Sequence[Encoded], classifier: ClassifierLike
    ) -> list[Prediction | Exception]:
        """One prediction per tweet, or the exception that stopped it. Should the group
        raise, each tweet is run alone: a tweet that makes the model fail cannot take the
        other tweets of its batch with it (a model that fails everything fails each)."""
        try:
            return list(classifier.predict(encoded))
        except Exception as exc:
            log.exception("inference failed for a group of %d", len(encoded))
            if len(encoded) == 1:
                return [exc]
        results: list[Prediction | Exception] = []
        for one in encoded:
            try:
                results.extend(classifier.predict([one]))
            except Exception as exc:
                results.append(exc)
        return results

    def _error(
        self,
        item: Inbound,
        tweet_id: str | None,
        reason: str,
        detail: str,
        tweet: Tweet | None = None,
    ) -> Outbound:
        cfg = self.config
        record = error_record(tweet_id, reason, detail, cfg.node_id, len(item.payload), tweet)
        log.info("bad input (%s): %s", reason, detail)
        return Outbound("error", cfg.errors_topic, dumps(record), item, tweet_id, reason)
