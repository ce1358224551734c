"""Payload parsing, record shapes, the record store and the batcher (no broker)."""

from __future__ import annotations

import json
import threading

import pytest

from edgemodel.inference import Prediction
from node.batcher import Batcher, bucket_by_length
from node.dedup import RecordStore
from node.messages import BadInput, Tweet, content_id, label_record, parse_tweet


def test_plain_text_gets_a_content_id() -> None:
    tweet = parse_tweet(b"I love my new car")
    assert tweet == Tweet(id=content_id("I love my new car"), text="I love my new car")
    assert len(tweet.id) == 16
    assert parse_tweet(b"I love my new car").id == tweet.id  # same text, same id


def test_a_node_entity_applies_to_tweets_that_name_none() -> None:
    plain = parse_tweet(b"recall announced", default_entity="Honda")
    assert plain == Tweet(content_id("recall announced", "Honda"), "recall announced", "Honda")
    assert parse_tweet(b'{"text": "recall announced", "entity": null}', default_entity="Honda") == (
        plain
    )
    own = parse_tweet(b'{"id": "t", "text": "recall", "entity": "Fiat"}', default_entity="Honda")
    assert own.entity == "Fiat"  # the tweet's own entity wins


def test_json_payload_fields() -> None:
    tweet = parse_tweet(b'{"id": "t1", "text": "BMW recalls cars", "entity": "BMW"}')
    assert tweet == Tweet("t1", "BMW recalls cars", "BMW")
    assert parse_tweet(b'{"id": 1234567890123456789, "text": "x"}').id == "1234567890123456789"
    no_id = parse_tweet(b'{"text": "BMW recalls cars", "entity": "BMW"}')
    assert no_id.id == content_id("BMW recalls cars", "BMW") != content_id("BMW recalls cars")


@pytest.mark.parametrize(
    ("payload", "reason", "tweet_id"),
    [
        (b"\xff\xfe not utf-8", "not_utf8", None),
        (b"", "empty_text", None),
        (b"   \n ", "empty_text", None),
        (b"x" * 5000, "too_large", None),
        (b'{"id": "a", "text": ', "malformed_json", None),
        (b"[1, 2]", None, None),  # not starting with "{": plain text, accepted
        (b'{"id": "a", "text": 5}', "bad_field", "a"),
        (b'{"id": true, "text": "x"}', "bad_field", None),
        (b'{"id": "a", "text": "x", "entity": 3}', "bad_field", "a"),
        (b'{"id": "a"}', "bad_field", "a"),
        (b'{"id": "a", "text": "  "}', "empty_text", "a"),
    ],
)
def test_bad_input(payload: bytes, reason: str | None, tweet_id: str | None) -> None:
    if reason is None:
        assert parse_tweet(payload).text == payload.decode()
        return
    with pytest.raises(BadInput) as info:
        parse_tweet(payload, max_bytes=4096)
    assert (info.value.reason, info.value.tweet_id) == (reason, tweet_id)


def test_label_record_shape() -> None:
    prediction = Prediction("positive", {"negative": 0.1, "neutral": 0.2, "positive": 0.7})
    model = {"name": "m", "version": "1", "variant": "int8", "sha256": "ab"}
    record = label_record(Tweet("t1", "x", "BMW"), prediction, model, "n1", 3.14159)
    assert record["id"] == "t1" and record["entity"] == "BMW" and record["node_id"] == "n1"
    assert record["latency_ms"] == 3.142 and record["model"] == model
    assert record["timestamp"].endswith("Z")
    assert "entity" not in label_record(Tweet("t2", "x"), prediction, model, "n1", 1.0)


def test_record_store_keeps_the_first_record(tmp_path) -> None:
    store = RecordStore(tmp_path / "r.sqlite", max_records=100)
    first = store.put_if_absent(
        [("a", "d1", "labels", '{"v":1}'), ("a", "d1", "labels", '{"v":2}')]
    )
    assert first == {("a", "d1"): ("labels", '{"v":1}')}
    again = store.put_if_absent(
        [("a", "d1", "labels", '{"v":3}'), ("b", "d2", "errors", '{"e":1}')]
    )
    assert again == {("a", "d1"): ("labels", '{"v":1}'), ("b", "d2"): ("errors", '{"e":1}')}
    store.close()
    reopened = RecordStore(tmp_path / "r.sqlite", max_records=100)  # survives a restart
    assert reopened.get("a", "d1") == ("labels", '{"v":1}') and len(reopened) == 2


def test_record_store_prunes_oldest(tmp_path) -> None:
    store = RecordStore(tmp_path / "r.sqlite", max_records=50)
    for start in range(0, 200, 10):
        store.put_if_absent((str(i), "d", "t", json.dumps(i)) for i in range(start, start + 10))
    assert len(store) <= 55
    assert store.get("0", "d") is None and store.get("199", "d") == ("t", "199")


@pytest.mark.timeout(30)  # a lone item that waited max_wait_s would hang here, not pass
def test_lone_item_is_not_delayed() -> None:
    batcher: Batcher[int] = Batcher(max_batch=8, max_wait_s=3600, maxsize=16)
    batcher.put(1)
    assert batcher.next_batch(timeout=1) == [1]
    assert batcher.next_batch(timeout=0.01) == []


def test_backlog_is_batched_up_to_max_batch() -> None:
    batcher: Batcher[int] = Batcher(max_batch=4, max_wait_s=0, maxsize=10)
    for i in range(10):
        assert batcher.put(i)
    assert not batcher.put(99, timeout=0.01)  # bounded: full queue refuses
    assert [batcher.next_batch(1) for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_growing_batch_waits_for_more() -> None:
    batcher: Batcher[int] = Batcher(max_batch=3, max_wait_s=3600, maxsize=10)
    batcher.put(1)
    batcher.put(2)
    threading.Timer(0.05, batcher.put, (3,)).start()
    assert batcher.next_batch(1) == [1, 2, 3]  # filled to max_batch, then returned


def test_bucket_by_length() -> None:
    groups = bucket_by_length([5, 40, 7, 16, 17, 300, 900], length=lambda n: n)
    assert groups == [[5, 7, 16], [17], [40], [300], [900]]
    # A token budget cuts buckets into calls of at most budget // bound rows.
    capped = bucket_by_length([10] * 5 + [60] * 3, length=lambda n: n, max_tokens=128)
    assert capped == [[10] * 5, [60, 60], [60]]
    assert bucket_by_length([900], length=lambda n: n, max_tokens=128) == [[900]]


def test_release_file_pages_keeps_the_data_readable(tmp_path) -> None:
    import mmap

    from node.memory import release_file_pages

    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4096)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert len(mapped[::4096]) == 256  # touch every page
        released = release_file_pages(path)
        assert released >= 0  # 0 where the OS has no /proc or glibc
        assert mapped[:256] == bytes(range(256)) and mapped[-1] == 255
