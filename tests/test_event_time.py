"""A tweet's own time (``created_at``): parsed, normalised, copied into its record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from edgemodel.inference import Classifier
from node.core import BatchStep, CoreConfig, Inbound
from node.event_time import EventTimeError, parse_created_at
from node.messages import parse_tweet

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2012-12-19T08:15:00Z", "2012-12-19T08:15:00.000Z"),
        ("2012-12-19T09:15:00.5+01:00", "2012-12-19T08:15:00.500Z"),
        (1355904900123, "2012-12-19T08:15:00.123Z"),
        (1355904900123.0, "2012-12-19T08:15:00.123Z"),
    ],
)
def test_created_at_is_normalised_to_utc_milliseconds(value: object, expected: str) -> None:
    assert parse_created_at(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2012-12-19 08:15:00", "no UTC offset"),
        ("yesterday", "not ISO 8601"),
        (1355904900, "epoch seconds instead of milliseconds"),
        ("2027-01-01T00:00:00Z", "more than a day ahead"),
        (True, "must be an ISO 8601 string or epoch milliseconds"),
        ([2012], "must be an ISO 8601 string or epoch milliseconds"),
        (10**300, "out of range"),
        ("x" * 41, "longer than 40"),
    ],
)
def test_bad_created_at_says_why(value: object, says: str) -> None:
    with pytest.raises(EventTimeError, match=says):
        parse_created_at(value, now=NOW)


def test_a_bad_time_keeps_the_tweet() -> None:
    good = parse_tweet(b'{"id": "1", "text": "x", "created_at": 1355904900123}')
    assert (good.created_at, good.created_at_error) == ("2012-12-19T08:15:00.123Z", None)
    bad = parse_tweet(b'{"id": "1", "text": "x", "created_at": "soon"}')
    assert bad.created_at is None and "not ISO 8601" in (bad.created_at_error or "")
    assert parse_tweet(b'{"id": "1", "text": "x", "created_at": null}').created_at is None
    # The time is not content: a redelivery with another time is the same tweet.
    assert good.digest == bad.digest


def test_records_carry_the_event_time_next_to_the_node_time(tiny_bundle) -> None:
    step = BatchStep(CoreConfig(node_id="n1", labels_topic="L", errors_topic="E"))
    payloads = [
        {"id": "a", "text": "great car", "entity": "BMW", "created_at": "2012-12-19T08:15:00Z"},
        {"id": "b", "text": "great car", "created_at": -5},
        {"id": "c", "text": "great car"},
        {"id": "d", "text": "\u200b", "created_at": 1355904900123},  # no known tokens
    ]
    result = step.run([Inbound(json.dumps(p).encode()) for p in payloads], Classifier(tiny_bundle))
    records = {o.tweet_id: (o.kind, json.loads(o.payload)) for o in result.records}
    kind, a = records["a"]
    assert kind == "label" and a["created_at"] == "2012-12-19T08:15:00.000Z"
    assert a["timestamp"].startswith(str(datetime.now(UTC).year))
    kind, b = records["b"]
    assert kind == "label" and "created_at" not in b and "before 2006" in b["created_at_error"]
    assert "created_at" not in records["c"][1] and "created_at_error" not in records["c"][1]
    kind, d = records["d"]
    assert kind == "error" and d["created_at"] == "2012-12-19T08:15:00.123Z"
