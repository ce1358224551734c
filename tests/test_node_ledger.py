"""The ack ledger (node/ledger.py) without a broker: a fake client that draws message ids
from a 16-bit counter as paho does, and reports publishes whenever the test says.

Issue 11, item 3: paho reports QoS 0 publishes (telemetry) too. The node used to keep
those ids in a "completed early" set forever; once the counter wrapped, a label that drew
the same id counted as acknowledged and its tweet was acked before the broker had the
label. These tests drive the ledger through more than 65,536 ids.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from node.ledger import AckLedger


@dataclass(frozen=True)
class Tweet:
    name: str
    epoch: int = 1
    qos: int = 1

    @property
    def needs_ack(self) -> bool:
        return self.qos > 0


class FakeClient:
    """paho's id counter: 1..65535, then 1 again."""

    def __init__(self, last_mid: int = 0) -> None:
        self.last_mid = last_mid
        self.acked: list[str] = []

    def draw(self) -> int:
        self.last_mid = self.last_mid % 65535 + 1
        return self.last_mid


def make(last_mid: int = 0) -> tuple[AckLedger, FakeClient]:
    client = FakeClient(last_mid)
    ledger = AckLedger(lambda tweet: client.acked.append(tweet.name))
    ledger.connection_reset()
    ledger.connected()
    return ledger, client


def send(client: FakeClient, report_now: AckLedger | None = None):
    """A publish whose report (on_publish) may come before publish() returns, as when
    paho's network thread sees the PUBACK first."""
    drawn: list[int] = []

    def _send() -> tuple[int, bool]:
        mid = client.draw()
        drawn.append(mid)
        if report_now is not None:
            report_now.on_publish(mid)
        return mid, True

    return _send, drawn


def test_label_is_acked_only_when_its_own_publish_is_reported() -> None:
    ledger, client = make()
    publish, drawn = send(client)
    ledger.publish(publish, 1, [Tweet("a")])
    assert client.acked == []
    ledger.on_publish(drawn[0])
    assert client.acked == ["a"]
    assert ledger.wait_drained(0)


def test_report_before_registration_completes_the_publish() -> None:
    ledger, client = make()
    publish, _ = send(client, report_now=ledger)
    ledger.publish(publish, 1, [Tweet("early")])
    assert client.acked == ["early"]
    assert ledger.stats().early_reports == 0 and ledger.stats().in_flight == 0


def test_telemetry_ids_cannot_complete_a_label_after_the_wrap() -> None:
    """65,535 QoS 0 publishes reported before they registered (the worst case for the old
    "early" set), then a label that draws the first one's id again: it must wait."""
    ledger, client = make()
    first_mid = None
    for _ in range(65_535):
        publish, drawn = send(client, report_now=ledger)
        ledger.publish(publish, 0)
        first_mid = first_mid or drawn[0]
    assert ledger.stats().early_reports == 0 and ledger.stats().in_flight == 0
    publish, drawn = send(client)
    ledger.publish(publish, 1, [Tweet("label")])
    assert drawn[0] == first_mid, "the counter did not wrap"
    assert client.acked == [], "acked before the broker had the label"
    ledger.on_publish(drawn[0])
    assert client.acked == ["label"]


def test_old_early_set_would_ack_on_wrap() -> None:
    """The same scenario through the algorithm the node used before the ledger: the test
    above is a real regression test, it catches the early ack."""
    pending: dict[int, list[str]] = {}
    early: set[int] = set()
    acked: list[str] = []
    client = FakeClient()

    def old_publish(qos: int, completes: list[str], report_first: bool) -> int:
        mid = client.draw()
        if report_first:
            old_on_publish(mid)
        if qos == 0:
            return mid
        if mid in early:
            early.discard(mid)
            acked.extend(completes)
        else:
            pending[mid] = completes
        return mid

    def old_on_publish(mid: int) -> None:
        if mid in pending:
            acked.extend(pending.pop(mid))
        else:
            early.add(mid)

    for _ in range(65_535):
        old_publish(0, [], report_first=False)
        old_on_publish(client.last_mid)  # QoS 0 reported once written
    old_publish(1, ["label"], report_first=False)
    assert acked == ["label"]  # acked with no PUBACK at all: the defect


def test_a_qos0_report_cannot_complete_a_label_holding_the_same_id() -> None:
    """A label stuck in flight for a whole id cycle, then telemetry draws its id: the
    ledger releases neither until the id has been reported twice."""
    ledger, client = make()
    publish, drawn = send(client)
    ledger.publish(publish, 1, [Tweet("stuck")])
    stuck_mid = drawn[0]
    for _ in range(65_534):
        p, d = send(client)
        ledger.publish(p, 1)
        ledger.on_publish(d[0])
    telemetry, d = send(client)
    ledger.publish(telemetry, 0)
    assert d[0] == stuck_mid
    assert ledger.stats().id_collisions == 1
    ledger.on_publish(stuck_mid)  # the telemetry packet written (or the PUBACK: unknown)
    assert client.acked == []
    ledger.on_publish(stuck_mid)
    assert client.acked == ["stuck"]


def test_acks_belong_to_their_connection() -> None:
    ledger, client = make()
    publish, drawn = send(client)
    ledger.publish(publish, 1, [Tweet("old", epoch=1), Tweet("qos0", epoch=1, qos=0)])
    ledger.connection_reset()
    ledger.connected()  # epoch 2: paho resends the record, but the tweet's ack is void
    ledger.on_publish(drawn[0])
    assert client.acked == []
    assert ledger.stats().skipped_stale == 1


def test_reconnect_forgets_unsent_qos0_publishes() -> None:
    ledger, client = make()
    publish, _ = send(client)
    ledger.publish(publish, 0)
    assert ledger.stats().in_flight == 1
    ledger.connection_reset()  # paho dropped the unsent QoS 0 packet
    assert ledger.stats().in_flight == 0


def test_refused_publish_is_not_recorded() -> None:
    ledger, client = make()
    assert not ledger.publish(lambda: (client.draw(), False), 1, [Tweet("x")])
    assert ledger.stats().in_flight == 0 and ledger.wait_drained(0)


def test_wait_drained_waits_for_qos1_only() -> None:
    ledger, client = make()
    p0, _ = send(client)
    ledger.publish(p0, 0)  # telemetry never reported (say the socket is stuck)
    p1, drawn = send(client)
    ledger.publish(p1, 1, [Tweet("a")])
    assert not ledger.wait_drained(0.05)
    threading.Timer(0.1, ledger.on_publish, [drawn[0]]).start()
    assert ledger.wait_drained(5)


def test_concurrent_publishers_and_reports() -> None:
    """Many threads publishing while a 'network thread' reports in random order: every
    tweet acked exactly once, nothing left in flight."""
    import queue
    import random

    ledger, client = make(last_mid=65_000)  # wrap during the run
    lock = threading.Lock()
    reports: queue.Queue[int | None] = queue.Queue()
    expected: list[str] = []

    def draw() -> int:
        with lock:
            return client.draw()

    def worker(w: int) -> None:
        rng = random.Random(w)
        for i in range(2000):
            qos = rng.choice([0, 1, 1])
            completes = [Tweet(f"{w}-{i}")] if qos else []
            with lock:
                expected.extend(t.name for t in completes)

            def _send() -> tuple[int, bool]:
                mid = draw()
                reports.put(mid)
                return mid, True

            ledger.publish(_send, qos, completes)

    def network() -> None:
        while (mid := reports.get()) is not None:
            ledger.on_publish(mid)

    net = threading.Thread(target=network)
    net.start()
    workers = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    reports.put(None)
    net.join()
    assert sorted(client.acked) == sorted(expected)
    assert ledger.stats().in_flight == 0 and ledger.stats().early_reports == 0
    assert ledger.wait_drained(0)
