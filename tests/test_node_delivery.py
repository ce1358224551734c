"""Nothing lost: kill -9, SIGTERM, a broker that is down. Real processes, real broker."""

from __future__ import annotations

import json
import signal

from harness import Collector, publish, start_mosquitto


def tweets(prefix: str, n: int) -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "text": f"tweet number {i} about cars"})
            for i in range(n)]  # fmt: skip


def labelled_ids(watcher: Collector, topic: str) -> set[str]:
    return {r["id"] for r in watcher.json(topic)}


def test_kill_9_mid_stream_loses_nothing_and_repeats_identically(node_factory, mosquitto):
    node = node_factory(extra=["--max-batch", "16"])
    watcher = Collector(mosquitto, [node.topics.labels, node.status_topic()])
    node.start_and_wait_online(watcher)
    expected = {f"k{i}" for i in range(2000)}
    publish(mosquitto, node.topics.tweets, tweets("k", 2000))
    watcher.wait_count(node.topics.labels, 100)
    node.kill()  # SIGKILL somewhere mid-stream

    will = watcher.wait_for(
        lambda _: [s for s in watcher.json(node.status_topic()) if s["state"] == "offline"],
        what="Last Will",
    )
    assert will[0]["reason"] == "connection lost"
    done_before = labelled_ids(watcher, node.topics.labels)
    assert len(done_before) < 2000, "the node finished before it was killed; test proves little"

    node.start_and_wait_online(watcher)
    watcher.wait_for(
        lambda _: labelled_ids(watcher, node.topics.labels) >= expected, what="all 2,000 labels"
    )
    by_id: dict[str, set[bytes]] = {}
    for message in watcher.on(node.topics.labels):
        by_id.setdefault(message.json()["id"], set()).add(message.payload)
    assert set(by_id) == expected
    repeats = len(watcher.on(node.topics.labels)) - len(expected)
    print(f"labelled before kill: {len(done_before)}, repeated records: {repeats}")
    conflicting = {i: p for i, p in by_id.items() if len(p) > 1}
    assert not conflicting, f"{len(conflicting)} ids got different records"
    node.signal(signal.SIGTERM)
    assert node.wait() == 0
    watcher.close()


def test_sigterm_drains_and_exits_0_with_offline_status(node_factory, mosquitto):
    node = node_factory()
    watcher = Collector(mosquitto, [node.topics.labels, node.status_topic()])
    node.start_and_wait_online(watcher)
    publish(mosquitto, node.topics.tweets, tweets("s", 300))
    watcher.wait_count(node.topics.labels, 1)
    node.signal(signal.SIGTERM)
    assert node.wait() == 0, node.log()
    watcher.wait_for(
        lambda _: any(s["state"] == "offline" and s["reason"] == "shutdown"
                      for s in watcher.json(node.status_topic())),
        what="offline status",
    )  # fmt: skip
    # Whatever was not done yet waited in the broker's session for the restart.
    node.start_and_wait_online(watcher)
    watcher.wait_for(
        lambda _: labelled_ids(watcher, node.topics.labels) >= {f"s{i}" for i in range(300)},
        what="all 300 labels after restart",
    )
    node.signal(signal.SIGINT)  # Ctrl-C behaves the same
    assert node.wait() == 0
    watcher.close()


def test_broker_down_at_start_and_mid_run(node_factory, tmp_path):
    broker = start_mosquitto(tmp_path / "broker")
    port = broker.port
    broker.stop()  # keep its port and data dir, but nothing is listening now
    node = node_factory(broker=broker).start()
    try:
        broker.start()
        watcher = Collector(broker, [node.topics.labels, node.status_topic()])
        watcher.wait_for(
            lambda _: any(s["state"] == "online" for s in watcher.json(node.status_topic())),
            what="node online once the broker is up",
        )
        publish(broker, node.topics.tweets, tweets("b", 5))
        watcher.wait_for(lambda _: len(labelled_ids(watcher, node.topics.labels)) == 5)
        watcher.close()

        broker.stop()  # mid-run outage: the node must survive and reconnect
        assert node.alive()
        broker.start()
        assert broker.port == port
        watcher = Collector(broker, [node.topics.labels])
        publish(broker, node.topics.tweets, tweets("c", 5))
        watcher.wait_for(
            lambda _: labelled_ids(watcher, node.topics.labels) >= {f"c{i}" for i in range(5)},
            what="labels after the broker restarted",
        )
        watcher.close()
        node.signal(signal.SIGTERM)
        assert node.wait() == 0
    finally:
        broker.stop()
