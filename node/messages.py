"""Tweet payloads in, label and error records out: the node's wire formats.

A tweet arrives as plain UTF-8 text or as JSON ``{"id", "text", "entity"}``. Records
are JSON objects; docs/node.md documents every field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from common.timestamps import utc_now
from edgemodel.inference import Prediction
from node.event_time import EventTimeError, parse_created_at

DEFAULT_MAX_BYTES = 4096
# Longest tweet id accepted (characters). Twitter's ids have 19 digits; anything far
# longer is a mistake or an attempt to bloat records and the record store.
MAX_ID_CHARS = 256
# Hex digits of sha256 kept for content ids: 64 bits, collision-free for any realistic
# stream while short enough to read in logs.
CONTENT_ID_HEX = 16


@dataclass(frozen=True)
class Tweet:
    id: str
    text: str
    entity: str | None = None
    # Event time (node/event_time.py): normalised, or why the tweet's value was not used.
    created_at: str | None = None
    created_at_error: str | None = None

    @property
    def digest(self) -> str:
        """What the record store keys on besides the id: the tweet's content."""
        return content_id(self.text, self.entity)


class BadInput(ValueError):
    """A payload the node cannot classify; becomes an error record."""

    def __init__(self, reason: str, detail: str, tweet_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.tweet_id = tweet_id


def content_id(text: str, entity: str | None = None) -> str:
    """Digest of a tweet's content; also the id of a tweet that came without one
    (identical text and entity, identical id)."""
    # A JSON array is a structured encoding: every string is quoted and escaped, so no
    # character inside a text or an entity can pass for the boundary between them (a
    # joining separator could: "a\x1fb" + "" and "a" + "b\x1f" collided, issue 20 item 6).
    data = json.dumps([text, entity], ensure_ascii=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:CONTENT_ID_HEX]


def parse_tweet(
    payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES, default_entity: str | None = None
) -> Tweet:
    """Decode one MQTT payload; raise :class:`BadInput` with a machine-readable reason."""
    if len(payload) > max_bytes:
        raise BadInput("too_large", f"{len(payload)} bytes, limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("not_utf8", str(exc)) from None
    if text.lstrip().startswith("{"):
        return _parse_json(text, default_entity)
    if not text.strip():
        raise BadInput("empty_text", "payload is empty or blank")
    return Tweet(id=content_id(text, default_entity), text=text, entity=default_entity)


def _unicode_ok(value: str) -> bool:
    """False for a string with a lone surrogate (JSON allows "\\ud800"; UTF-8 does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_json(text: str, default_entity: str | None) -> Tweet:
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadInput("malformed_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise BadInput("malformed_json", str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise BadInput("bad_field", "JSON payload must be an object")
    raw_id = data.get("id")
    tweet_text = data.get("text")
    entity = data.get("entity")
    # Ids may be numbers (tweet ids usually are); bool is an int subclass, so exclude it.
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        raise BadInput("bad_field", "'id' must be a string or an integer")
    tweet_id = str(raw_id) if raw_id is not None else None
    if tweet_id == "":
        raise BadInput("bad_field", "'id' is empty")
    if tweet_id is not None and len(tweet_id) > MAX_ID_CHARS:
        raise BadInput("bad_field", f"'id' is longer than {MAX_ID_CHARS} characters")
    if tweet_id is not None and not _unicode_ok(tweet_id):
        raise BadInput("not_utf8", "'id' holds a lone surrogate (not valid Unicode)")
    if not isinstance(tweet_text, str):
        raise BadInput("bad_field", "'text' must be a string", tweet_id)
    if entity is not None and not isinstance(entity, str):
        raise BadInput("bad_field", "'entity' must be a string or null", tweet_id)
    if not _unicode_ok(tweet_text):
        raise BadInput("not_utf8", "'text' holds a lone surrogate (not valid Unicode)", tweet_id)
    if entity is not None and not _unicode_ok(entity):
        raise BadInput("not_utf8", "'entity' holds a lone surrogate (not valid Unicode)", tweet_id)
    entity = entity or default_entity
    if tweet_id is None:
        tweet_id = content_id(tweet_text, entity)
    if not tweet_text.strip():
        raise BadInput("empty_text", "'text' is empty or blank", tweet_id)
    created_at = created_at_error = None
    if data.get("created_at") is not None:
        try:
            created_at = parse_created_at(data["created_at"])
        except EventTimeError as exc:
            created_at_error = str(exc)
    return Tweet(tweet_id, tweet_text, entity, created_at, created_at_error)


def label_record(
    tweet: Tweet,
    prediction: Prediction,
    model: dict[str, str],
    node_id: str,
    latency_ms: float,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": tweet.id,
        "label": prediction.label,
        "scores": prediction.scores,
        "model": model,
        "node_id": node_id,
        "latency_ms": round(latency_ms, 3),
        "timestamp": utc_now(),
    }
    record.update(event_time_fields(tweet))
    if tweet.entity is not None:
        record["entity"] = tweet.entity
        # Models with the related head answer whether the tweet is about the entity;
        # label/scores stay the reputation polarity, so consumers can drop unrelated ones.
        if prediction.related_score is not None:
            record["related"] = prediction.related
            record["related_score"] = prediction.related_score
    return record


def event_time_fields(tweet: Tweet | None) -> dict[str, str]:
    """``created_at`` or ``created_at_error`` for a record, when the tweet gave a time."""
    if tweet is None:
        return {}
    if tweet.created_at is not None:
        return {"created_at": tweet.created_at}
    if tweet.created_at_error is not None:
        return {"created_at_error": tweet.created_at_error}
    return {}


def error_record(
    tweet_id: str | None,
    reason: str,
    detail: str,
    node_id: str,
    payload_bytes: int,
    tweet: Tweet | None = None,
) -> dict[str, Any]:
    """``tweet``: the parsed tweet, where parsing got that far (its event time is kept)."""
    return {
        "id": tweet_id,
        "reason": reason,
        "detail": detail,
        "payload_bytes": payload_bytes,
        "node_id": node_id,
        "timestamp": utc_now(),
        **event_time_fields(tweet),
    }


def dumps(record: dict[str, Any]) -> str:
    """Compact JSON; what is stored for deduplication is exactly what is published.

    Always encodable as UTF-8: should a lone surrogate slip into a record (an exception's
    text, say), the record falls back to ASCII escapes rather than failing to publish.
    Never NaN or Infinity (not JSON): node/core.py turns non-finite outputs into
    ``non_finite_output`` errors, and ``allow_nan=False`` raises should one get past it.
    """
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _unicode_ok(text):
        return text
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
