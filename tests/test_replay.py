"""`node replay`: a labelled file published in its own time order, with created_at."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from edgemodel.data import Example
from edgemodel.splits import TWITTER_EPOCH_MS
from harness import REPO, Collector
from node.replay import ReplayError, plan, wall_offsets

T0_MS = 1_355_900_000_000  # 2012-12-19


def snowflake(ms: int, serial: int = 0) -> str:
    return str(((ms - TWITTER_EPOCH_MS) << 22) | serial)


def example(ms: int, entity: str | None, text: str, serial: int = 0) -> Example:
    return Example(text, "negative", entity, True, "replab", snowflake(ms, serial))


def test_plan_orders_by_snowflake_time_and_sets_created_at() -> None:
    rows = [
        example(T0_MS + 60_000, "BMW", "second"),
        example(T0_MS, "BMW", "first"),
        example(T0_MS + 30_000, "Audi", "audi"),
        Example("no time", "neutral", "BMW", True, "replab", "12345"),
    ]
    got = plan(rows)
    assert [json.loads(t.payload)["text"] for t in got.tweets] == ["first", "audi", "second"]
    assert got.skipped_no_time == 1 and got.span_s == 60.0
    first = json.loads(got.tweets[0].payload)
    assert first == {
        "id": snowflake(T0_MS),
        "text": "first",
        "entity": "BMW",
        "created_at": "2012-12-19T06:53:20.000Z",
    }
    only_bmw = plan(rows, entity="BMW")
    assert [json.loads(t.payload)["entity"] for t in only_bmw.tweets] == ["BMW", "BMW"]
    with pytest.raises(ReplayError, match="'Kia' is not in the file"):
        plan(rows, entity="Kia")


def test_a_file_without_entities_gets_the_given_one() -> None:
    rows = [example(T0_MS, None, "a"), example(T0_MS + 1000, None, "b")]
    assert {json.loads(t.payload)["entity"] for t in plan(rows, entity="Ford").tweets} == {"Ford"}
    assert {json.loads(t.payload)["entity"] for t in plan(rows).tweets} == {None}


def test_gaps_are_divided_by_the_speed_and_capped() -> None:
    tweets = plan([example(T0_MS + s * 1000, "E", str(s)) for s in (0, 60, 3660, 3670)]).tweets
    assert wall_offsets(tweets, 60, None) == [0.0, 1.0, 61.0, pytest.approx(61 + 1 / 6)]
    assert wall_offsets(tweets, 60, 5.0) == [0.0, 1.0, 6.0, pytest.approx(6 + 1 / 6)]


def write_replab(path, rows: list[tuple[str, int, str]]) -> None:
    lines = ["entity_id\tentity\ttweet_id\tfiltering\tpolarity\ttext"]
    for n, (entity, ms, text) in enumerate(rows):
        lines.append(f"E{entity}\t{entity}\t{snowflake(ms, n)}\tRELATED\tNEGATIVE\t{text}")
    path.write_text("\n".join(lines) + "\n")


def test_replay_publishes_the_file_in_time_order_with_qos1(mosquitto, tmp_path) -> None:
    data = tmp_path / "feed.tsv"
    # Out of file order; 3 s of event time between the first and last Honda tweet.
    write_replab(
        data,
        [
            ("Honda", T0_MS + 3000, "recall of 10k cars"),
            ("Honda", T0_MS, "love my civic"),
            ("Fiat", T0_MS + 1000, "fiat 500 is fun"),
            ("Honda", T0_MS + 1500, "dealer was rude"),
        ],
    )
    topic = f"test/{uuid.uuid4().hex[:8]}/tweets"
    watcher = Collector(mosquitto, [topic])
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "node", "replay", "--data", str(data), "--speed", "2",
             "--entity", "Honda", "--broker", mosquitto.url, "--topic", topic],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "published 3 tweets" in done.stdout
        got = [m.json() for m in watcher.wait_count(topic, 3)]
    finally:
        watcher.close()
    assert [t["text"] for t in got] == ["love my civic", "dealer was rude", "recall of 10k cars"]
    assert {t["entity"] for t in got} == {"Honda"}
    assert got[-1]["created_at"] == "2012-12-19T06:53:23.000Z"
    assert took >= 1.5  # 3 s of event time at --speed 2: the spacing was kept


def test_replay_names_what_is_wrong(mosquitto, tmp_path) -> None:
    data = tmp_path / "feed.tsv"
    write_replab(data, [("Honda", T0_MS, "x")])
    run = [sys.executable, "-m", "node", "replay", "--data", str(data)]
    unknown = subprocess.run(
        [*run, "--entity", "Kia", "--broker", mosquitto.url],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unknown.returncode == 2 and "'Kia' is not in the file" in unknown.stderr
    bad_speed = subprocess.run(
        [*run, "--speed", "0"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert bad_speed.returncode == 2 and "must be above 0" in bad_speed.stderr
