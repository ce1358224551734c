"""The node's teach store: recent texts per entity, answers, purge, label sets between nodes;
and a running node keeping the texts it labels (without ever holding labels back)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from edgemodel.inference import Classifier, Prediction
from harness import WAIT_S, Collector, embedded_node, publish, wait_until
from node.messages import Tweet
from node.teachstore import TeachStore, TeachStoreError, TextKeeper


def labelled(n: int, entity: str | None = "Kia", start: int = 0):
    """Rows as the node hands them over: (tweet, prediction, model sha256)."""
    rows = []
    for i in range(start, start + n):
        tweet = Tweet(id=f"t{i}", text=f"tweet number {i} about cars", entity=entity)
        embedding = np.full(4, i, np.float32)
        scores = {"negative": 0.2, "neutral": 0.5, "positive": 0.3}
        rows.append((tweet, Prediction("neutral", scores, 0.7, embedding), "sha"))
    return rows


def test_keeps_the_most_recent_n_per_entity_and_survives_reopening(tmp_path: Path) -> None:
    store = TeachStore(tmp_path / "teach.sqlite", max_per_entity=5)
    store.keep(labelled(8, "Kia"))
    store.keep(labelled(3, "BMW"))
    store.keep(labelled(2, None))  # no entity: nothing to teach, not kept
    store.close()

    store = TeachStore(tmp_path / "teach.sqlite", max_per_entity=5)
    kia = store.candidates("kia")  # entities match case-insensitively
    assert [k.tweet_id for k in kia] == ["t3", "t4", "t5", "t6", "t7"]
    assert kia[-1].embedding is not None and kia[-1].embedding.tolist() == [7.0] * 4
    assert kia[0].scores["neutral"] == 0.5 and kia[0].related_score == 0.7
    assert {e["entity"]: e["texts"] for e in store.entities()} == {"BMW": 3, "Kia": 5}
    assert (tmp_path / "teach.sqlite").stat().st_mode & 0o077 == 0


def test_zero_keeps_nothing(tmp_path: Path) -> None:
    store = TeachStore(tmp_path / "teach.sqlite", max_per_entity=0)
    assert store.keep(labelled(3)) == 0
    assert store.candidates("Kia") == []


def test_answers_undo_and_purge(tmp_path: Path) -> None:
    store = TeachStore(tmp_path / "teach.sqlite")
    store.keep(labelled(4))
    first, second, *_ = store.candidates("Kia")
    store.answer("Kia", first.digest, "negative")
    store.answer("Kia", second.digest, "unrelated")
    assert [c.tweet_id for c in store.candidates("Kia")] == ["t2", "t3"]
    with pytest.raises(TeachStoreError, match="unknown answer"):
        store.answer("Kia", first.digest, "great")
    undone = store.undo("Kia")
    assert undone is not None and undone.tweet_id == "t1" and undone.answer == "unrelated"
    assert [a.answer for a in store.answers("Kia")] == ["negative"]
    assert store.answers()[0].guess == "neutral"  # the model's guess is kept with the answer

    assert store.purge("Kia") == (4, 0)  # texts go; answers stay unless asked
    assert store.candidates("Kia") == [] and len(store.answers()) == 1
    assert store.purge(answers=True) == (0, 1)
    assert b"tweet number" not in (tmp_path / "teach.sqlite").read_bytes()


def test_label_sets_export_and_import_between_nodes(tmp_path: Path) -> None:
    one = TeachStore(tmp_path / "one.sqlite")
    one.keep(labelled(3))
    a, b, c = one.candidates("Kia")
    one.answer("Kia", a.digest, "positive")
    one.answer("Kia", b.digest, "unrelated")
    one.answer("Kia", c.digest, "skip")  # skips are not labels: not exported
    tsv = one.export_tsv()
    assert tsv.splitlines()[0] == "id\tentity\tfiltering\tpolarity\ttext"
    assert len(tsv.splitlines()) == 3

    two = TeachStore(tmp_path / "two.sqlite")
    assert two.import_tsv(tsv) == (2, 0)
    assert two.import_tsv("\ufeff" + tsv) == (0, 2)  # dedupes (a BOM is fine too)
    assert [(x.entity, x.answer) for x in two.answers()] == [
        ("Kia", "positive"),
        ("Kia", "unrelated"),
    ]
    with pytest.raises(TeachStoreError, match="line 2"):
        two.import_tsv("id\tentity\tfiltering\tpolarity\ttext\n1\tKia\tRELATED\tgreat\tx\n")
    with pytest.raises(TeachStoreError, match="header"):
        two.import_tsv("hello\n")


def test_keeper_drops_rather_than_blocks(tmp_path: Path) -> None:
    store = TeachStore(tmp_path / "teach.sqlite")
    keeper = TextKeeper(store, queue_size=1)  # not started: nothing drains the queue
    started = time.monotonic()
    for i in range(5):
        keeper.offer(labelled(1, start=i))
    assert time.monotonic() - started < WAIT_S
    assert keeper.dropped == 4
    keeper.start()
    assert keeper.wait_idle(WAIT_S)
    assert keeper.kept == 1


def test_a_running_node_keeps_the_texts_it_labels(mosquitto, tiny_bundle, tmp_path) -> None:
    service, topics = embedded_node(
        mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1), texts_per_entity=10
    )
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        tweets = [json.dumps({"id": str(i), "text": f"great car {i}", "entity": "Kia"})
                  for i in range(15)]  # fmt: skip
        publish(mosquitto, topics.tweets, [*tweets, "plain sentiment, no entity"])
        watcher.wait_count(topics.labels, 16)
        # Labels go out before their texts reach the store's writer: wait for the texts.
        wait_until(lambda: service.telemetry()["teach_texts"]["kept"] == 15, what="15 texts")
        kept = service.teach_store.candidates("Kia")
        assert [k.tweet_id for k in kept] == [str(i) for i in range(5, 15)]
        assert kept[0].embedding is not None and kept[0].embedding.shape[0] > 0
        assert service.telemetry()["teach_texts"]["kept"] == 15
    finally:
        service.stop()
        watcher.close()


def test_a_broken_teach_store_costs_texts_not_labels(mosquitto, tiny_bundle, tmp_path) -> None:
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    (tmp_path / "state" / "teach.sqlite").mkdir(parents=True)  # cannot be opened as a file
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        publish(mosquitto, topics.tweets, [json.dumps({"text": "ok", "entity": "Kia"})])
        watcher.wait_count(topics.labels, 1)
        assert service.teach_store is None
    finally:
        service.stop()
        watcher.close()


def test_cli_purges_exports_and_imports(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node.cli import app

    one, two = tmp_path / "one", tmp_path / "two"
    store = TeachStore.in_state_dir(one)
    store.keep(labelled(3))
    store.answer("Kia", store.candidates("Kia")[0].digest, "negative")
    store.close()
    runner = CliRunner()

    result = runner.invoke(app, ["labels", "export", "--out", str(tmp_path / "kia.tsv"),
                                 "--state-dir", str(one)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["labels", "import", str(tmp_path / "kia.tsv"),
                                 "--state-dir", str(two)])  # fmt: skip
    assert result.exit_code == 0 and "imported 1 labels (0 already here)" in result.output
    (tmp_path / "bad.tsv").write_text("id\tentity\tfiltering\tpolarity\ttext\n1\tKia\tX\t\tt\n")
    result = runner.invoke(app, ["labels", "import", str(tmp_path / "bad.tsv"),
                                 "--state-dir", str(two)])  # fmt: skip
    assert result.exit_code == 2 and "line 2" in result.output

    result = runner.invoke(app, ["texts", "purge", "--entity", "KIA", "--state-dir", str(one)])
    assert result.exit_code == 0 and "purged 3 kept texts and 0 labels" in result.output
    assert TeachStore.in_state_dir(one).candidates("Kia") == []
    assert runner.invoke(app, ["texts", "purge", "--state-dir", str(tmp_path / "x")]).exit_code == 2
