"""The node's pure batch step (node/core.py), without a broker.

A fake classifier for the plumbing, the tiny real TFLite bundle for the property-based
tests: arbitrary bytes and arbitrary JSON through parse -> store -> classify must give
exactly one record per tweet (issue 11, item 1).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemodel.inference import Classifier, EmptyTextError, Encoded, Prediction
from node.core import BatchStep, CoreConfig, Inbound
from node.dedup import RecordStore, ResilientStore
from node.messages import MAX_ID_CHARS, content_id

CONFIG = CoreConfig(node_id="n1", labels_topic="L", errors_topic="E")


@dataclass
class FakeBundle:
    def identity(self) -> dict[str, str]:
        return {"name": "fake", "version": "1", "variant": "int8", "sha256": "0" * 64}


class FakeClassifier:
    """Label by text length; raises on texts containing ``poison``."""

    bundle = FakeBundle()

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison
        self.calls = 0

    def encode(self, text: str, entity: str | None = None) -> Encoded:
        if self.poison and self.poison in text:
            raise TypeError("the tokenizer choked")
        if not text.strip("?"):
            raise EmptyTextError("nothing known")
        n = min(len(text), 60)
        return Encoded(list(range(n)), [0] * n)

    def predict(self, batch):
        self.calls += 1
        return [
            Prediction("positive" if len(e) % 2 else "negative", {"positive": 0.5, "negative": 0.5})
            for e in batch
        ]


def tweets(*payloads: str | bytes) -> list[Inbound]:
    return [
        Inbound(p.encode() if isinstance(p, str) else p, handle=i) for i, p in enumerate(payloads)
    ]


def test_one_record_per_tweet_in_order() -> None:
    batch = tweets(
        '{"id": "a", "text": "good"}',
        b"\xff",
        "plain text tweet",
        '{"id": "b", "text": "???"}',
    )
    result = BatchStep(CONFIG).run(batch, FakeClassifier())
    assert [r.inbound.handle for r in result.records] == [0, 1, 2, 3]
    assert [r.kind for r in result.records] == ["label", "error", "label", "error"]
    assert [r.topic for r in result.records] == ["L", "E", "L", "E"]
    assert result.records[1].reason == "not_utf8" and result.records[3].reason == "no_known_tokens"
    assert json.loads(result.records[2].payload)["id"] == content_id("plain text tweet")
    assert (result.labelled, result.errors, result.duplicates) == (2, 2, 0)
    assert result.ran_inference


def test_a_poison_tweet_gets_an_error_and_does_not_hold_the_others() -> None:
    batch = tweets(*[json.dumps({"id": f"t{i}", "text": f"tweet {i}"}) for i in range(5)])
    batch.insert(2, Inbound(b'{"id": "p", "text": "POISON here"}', handle="p"))
    result = BatchStep(CONFIG).run(batch, FakeClassifier(poison="POISON"))
    assert result.retried_singly
    assert len(result.records) == 6
    kinds = {r.inbound.handle: (r.kind, r.reason) for r in result.records}
    assert kinds["p"] == ("error", "internal_error")
    assert all(kinds[i] == ("label", None) for i in range(5))
    error = json.loads(next(r.payload for r in result.records if r.kind == "error"))
    assert error["id"] is None and "TypeError" in error["detail"]


def test_redelivery_gets_the_stored_record_and_id_reuse_is_labelled_afresh(tmp_path) -> None:
    store = RecordStore(tmp_path / "r.sqlite")
    step = BatchStep(CONFIG, store)
    first = step.run(tweets('{"id": "x", "text": "first text"}'), FakeClassifier())
    again = step.run(tweets('{"id": "x", "text": "first text"}'), FakeClassifier())
    assert again.records[0].kind == "duplicate"
    assert again.records[0].payload == first.records[0].payload
    other = step.run(tweets('{"id": "x", "text": "another text entirely"}'), FakeClassifier())
    assert other.records[0].kind == "label" and other.id_reused == 1
    assert other.records[0].payload != first.records[0].payload
    # The entity is content too.
    entity = step.run(
        tweets('{"id": "x", "text": "first text", "entity": "BMW"}'), FakeClassifier()
    )
    assert entity.records[0].kind == "label" and entity.id_reused == 1


def test_separator_characters_cannot_make_two_tweets_one(tmp_path) -> None:
    """Issue 20 item 6: the content digest once joined text and entity with U+001F, so a
    text ending in U+001F + entity and that text with the entity + U+001F collided."""
    step = BatchStep(CONFIG, RecordStore(tmp_path / "r.sqlite"))
    a = json.dumps({"id": "r3", "text": "a new model\u001fBMW"})
    b = json.dumps({"id": "r3", "text": "a new model", "entity": "BMW\u001f"})
    first, second = (step.run(tweets(p), FakeClassifier()) for p in (a, b))
    assert first.records[0].kind == "label"
    assert second.records[0].kind == "label" and second.id_reused == 1
    assert json.loads(second.records[0].payload)["entity"] == "BMW\u001f"
    # Tweets without an id get their content digest as id: those two stay apart too.
    assert content_id("a new model\x1fBMW") != content_id("a new model", "BMW\x1f")
    assert content_id("ab", "c") != content_id("a", "bc")
    assert content_id("x", None) != content_id("x", "")


def test_a_tweet_that_fails_inference_does_not_fail_its_batch() -> None:
    """Issue 20: one tweet the interpreter (or a head) fails on made every tweet of the
    batch an inference_failed error, other brands' tweets and tweets without entity too."""

    class FailsOnBoom(FakeClassifier):
        def encode(self, text: str, entity: str | None = None) -> Encoded:
            encoded = super().encode(text, entity)
            return Encoded(encoded.input_ids, encoded.segment_ids, entity)

        def predict(self, batch):
            if any(e.entity == "boom" for e in batch):
                raise ValueError("matmul: mismatch in its core dimension")
            return super().predict(batch)

    batch = tweets(
        '{"id": "a", "text": "same length"}',
        '{"id": "b", "text": "same length", "entity": "boom"}',
        '{"id": "c", "text": "same length", "entity": "fine"}',
    )
    result = BatchStep(CONFIG).run(batch, FailsOnBoom())
    assert [r.kind for r in result.records] == ["label", "error", "label"]
    assert result.records[1].reason == "inference_failed"
    assert "core dimension" in json.loads(result.records[1].payload)["detail"]


def test_same_tweet_twice_in_one_batch_gets_one_record(tmp_path) -> None:
    step = BatchStep(CONFIG, RecordStore(tmp_path / "r.sqlite"))
    body = '{"id": "d", "text": "twice"}'
    result = step.run(tweets(body, body), FakeClassifier())
    assert [r.kind for r in result.records] == ["label", "duplicate"]
    assert result.records[0].payload == result.records[1].payload


def test_a_failing_store_does_not_stop_labelling(tmp_path) -> None:
    class Broken:
        def lookup(self, keys):
            raise OSError("disk on fire")

        def put_if_absent(self, items):
            raise OSError("disk on fire")

    step = BatchStep(CONFIG, ResilientStore(lambda: Broken(), retry_s=60))  # type: ignore[arg-type]
    result = step.run(tweets('{"id": "s", "text": "still labelled"}'), FakeClassifier())
    assert [r.kind for r in result.records] == ["label"]
    assert step.store.status.startswith("degraded: read: OSError: disk on fire")


LONE_SURROGATES = [
    (rb'{"id":"x","text":"hello \ud800 world"}', "not_utf8", "x"),
    (rb'{"id":"x\udfff","text":"hello world"}', "not_utf8", None),
    (rb'{"id":"x","text":"hello","entity":"\udbff"}', "not_utf8", "x"),
    (b'{"id":"x","text":"deep","n":' + b"[" * 2000 + b"]" * 2000 + b"}", "malformed_json", None),
    (b"[" * 2000 + b"]" * 2000, "empty_text", None),  # not JSON-looking: plain text
    (b'{"id":"' + b"9" * (MAX_ID_CHARS + 1) + b'","text":"long id"}', "bad_field", None),
    (b'{"id":' + b"9" * 300 + b',"text":"long numeric id"}', "bad_field", None),
    (b'{"id":' + b"9" * 5000 + b',"text":"huge"}', "too_large", None),
    (b'{"id":' + b"9" * 4050 + b',"text":"int over 4300 digits"}', None, None),
    (b'{"id": 1e999, "text": "inf"}', "bad_field", None),
    (b'{"id": NaN, "text": "nan"}', "bad_field", None),
]


@pytest.mark.parametrize(("payload", "reason", "tweet_id"), LONE_SURROGATES)
def test_poison_payloads_from_the_issue(payload: bytes, reason, tweet_id) -> None:
    result = BatchStep(CONFIG).run([Inbound(payload)], FakeClassifier())
    assert len(result.records) == 1
    record = json.loads(result.records[0].payload)
    record_bytes = result.records[0].payload.encode("utf-8")  # publishable
    assert record_bytes
    if reason is None:  # whatever the reason, it is an error record, not a crash
        assert result.records[0].kind in ("error", "label")
        return
    if reason == "empty_text":  # plain text "[[[...]]]": the fake knows no such tokens
        assert result.records[0].kind in ("error", "label")
        return
    assert (result.records[0].kind, record["reason"], record["id"]) == ("error", reason, tweet_id)


# -- property-based: the real tiny model ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, num_threads=1)


def _check_one_record_each(step: BatchStep, classifier, payloads: list[bytes]) -> None:
    batch = [Inbound(p, handle=i) for i, p in enumerate(payloads)]
    result = step.run(batch, classifier)
    assert sorted(r.inbound.handle for r in result.records) == list(range(len(batch)))
    for record in result.records:
        record.payload.encode("utf-8")  # paho must be able to send it
        body = json.loads(record.payload)
        if record.kind == "error" or "reason" in body:  # (a duplicate may repeat an error)
            assert record.topic == "E" and body["reason"]
        else:
            assert record.topic == "L" and body["label"] in ("negative", "neutral", "positive")
        if body.get("id") is not None:
            assert len(body["id"]) <= MAX_ID_CHARS
    assert result.labelled + result.errors + result.duplicates == len(batch)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
# Strings with lone surrogates, control characters and the like: JSON can carry them.
any_text = st.text(alphabet=st.characters(codec=None), max_size=200)
tweet_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(any_text, st.integers(), json_values),
        "text": st.one_of(any_text, st.text(string.ascii_letters + " ", max_size=80), json_values),
        "entity": st.one_of(st.none(), any_text, json_values),
    },
).map(lambda d: json.dumps(d, ensure_ascii=True).encode())

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_arbitrary_bytes_give_one_record_each(tiny_classifier, tmp_path, payloads) -> None:
    store = ResilientStore.at(tmp_path / "bytes.sqlite")
    _check_one_record_each(BatchStep(CONFIG, store), tiny_classifier, payloads)
    store.close()


@SETTINGS
@given(payloads=st.lists(tweet_objects | json_values.map(lambda v: json.dumps(v).encode()),
                         min_size=1, max_size=8))  # fmt: skip
def test_arbitrary_json_gives_one_record_each(tiny_classifier, tmp_path, payloads) -> None:
    store = ResilientStore.at(tmp_path / "json.sqlite")
    _check_one_record_each(BatchStep(CONFIG, store), tiny_classifier, payloads)
    assert store.healthy, store.status
    store.close()
