"""Scale-out on one broker: nodes in an MQTT 5 shared subscription (node start --share-group).

Real Mosquitto 2.0, real node processes. Mosquitto hands a group's messages to its members
in turn, connected or not: a member that dies keeps receiving its turn into its persistent
session, and those tweets wait there until a node with the same id comes back (what
systemd's Restart=on-failure does) or the session expires (then they are gone). A member
stopped with SIGTERM unsubscribes first, so the others get the new tweets.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from harness import Collector, holds_for, publish, settled


def tweets(prefix: str, n: int) -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "text": f"tweet number {i} about cars"})
            for i in range(n)]  # fmt: skip


def group_nodes(node_factory, count: int, group: str = "g") -> list:
    return [node_factory(extra=["--share-group", group]) for _ in range(count)]


@pytest.mark.slow
def test_three_members_share_ten_thousand_tweets_each_labelled_once(node_factory, mosquitto):
    nodes = group_nodes(node_factory, 3)
    topics = nodes[0].topics
    watcher = Collector(mosquitto, [topics.labels, "repedge/nodes/+/status"])
    for node in nodes:
        node.start_and_wait_online(watcher)

    publish(mosquitto, topics.tweets, tweets("t", 10_000))
    watcher.wait_count(topics.labels, 10_000, timeout=600)
    # A tweet labelled twice would show up as a 10,001st record.
    holds_for(lambda: len(watcher.on(topics.labels)) == 10_000, 1.0, what="10,000 records")
    records = watcher.json(topics.labels)
    ids = Counter(r["id"] for r in records)
    assert len(ids) == 10_000 and set(ids.values()) == {1}
    shares = Counter(r["node_id"] for r in records)
    assert set(shares) == {n.node_id for n in nodes}, shares
    # Round-robin delivery: each member gets about a third (within 5 points here).
    assert all(abs(count / 10_000 - 1 / 3) < 0.05 for count in shares.values()), shares
    watcher.close()


def test_a_killed_member_s_share_waits_for_its_restart_then_nothing_is_lost(
    node_factory, mosquitto
):
    nodes = group_nodes(node_factory, 3)
    topics = nodes[0].topics
    victim = nodes[1]
    watcher = Collector(mosquitto, [topics.labels, "repedge/nodes/+/status"])
    for node in nodes:
        node.start_and_wait_online(watcher)

    publish(mosquitto, topics.tweets, tweets("a", 600))
    watcher.wait_count(topics.labels, 600)
    victim.kill()  # kill -9: no DISCONNECT, its session (and subscription) stays
    publish(mosquitto, topics.tweets, tweets("b", 900))
    survivors = {n.node_id for n in nodes if n is not victim}
    # Mosquitto keeps a dead member in the rotation: its turns pile up in its session.
    watcher.wait_for(
        lambda _: len([r for r in watcher.json(topics.labels) if r["id"][0] == "b"]) >= 600,
        what="the survivors' share of the tweets sent after the kill",
    )
    # The survivors work through their share; the dead member's turns stay queued.
    settled(lambda: len(watcher.on(topics.labels)), quiet_s=2.0)
    after_kill = [r for r in watcher.json(topics.labels) if r["id"][0] == "b"]
    assert {r["node_id"] for r in after_kill} <= survivors
    stranded = 900 - len({r["id"] for r in after_kill})
    assert 250 <= stranded <= 350, f"{stranded} of 900 tweets queued for the dead member"

    victim.start()  # same node id -> same client id -> its session, with the queue
    watcher.wait_for(
        lambda _: (
            {r["id"] for r in watcher.json(topics.labels)}
            >= {f"a{i}" for i in range(600)} | {f"b{i}" for i in range(900)}
        ),
        what="every tweet labelled once the member is back",
    )
    by_victim = {r["id"] for r in watcher.json(topics.labels) if r["node_id"] == victim.node_id}
    assert len(by_victim & {f"b{i}" for i in range(900)}) >= stranded
    watcher.close()


def test_a_member_stopped_with_sigterm_leaves_the_rotation(node_factory, mosquitto):
    nodes = group_nodes(node_factory, 2)
    topics = nodes[0].topics
    leaving, staying = nodes
    watcher = Collector(mosquitto, [topics.labels, "repedge/nodes/+/status"])
    for node in nodes:
        node.start_and_wait_online(watcher)

    leaving.signal(signal.SIGTERM)  # unsubscribes from the group before it drains and exits
    assert leaving.wait() == 0
    publish(mosquitto, topics.tweets, tweets("s", 400))
    # Without leaving, every second tweet would wait in the stopped member's session.
    watcher.wait_count(topics.labels, 400)
    assert {r["node_id"] for r in watcher.json(topics.labels)} == {staying.node_id}
    watcher.close()
