"""common/: the object id, the wire timestamp, the percentile, the broker endpoint and the
one paho client-setup path (its failed-connect and taken-over-session logging, against a
real Mosquitto)."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import topics
from common.endpoint import BrokerEndpoint, EndpointError
from common.hass import object_id
from common.mqttclient import new_client
from common.stats import percentile
from common.timestamps import parse_wire, to_wire, utc_now
from harness import WAIT_S, Mosquitto, embedded_node, free_port

# -- Home Assistant object id -------------------------------------------------------------


def test_object_id_keeps_ids_apart_that_sanitising_made_equal() -> None:
    # Issue 20: node user pi_1_4e59eb52 landed on node pi.1's discovery topic.
    hashed_pi_1 = "pi_1_" + hashlib.sha256(b"pi.1").hexdigest()[:8]
    assert object_id(hashed_pi_1) != object_id("pi.1")
    assert object_id("pi-kitchen") == "repedge_pi-kitchen"  # clean ids stay readable
    assert object_id("pi_1") == "repedge_pi_1"


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=30, unique=True))
def test_object_ids_are_distinct_and_topic_safe(ids: list[str]) -> None:
    objects = [object_id(i) for i in ids]
    assert len(set(objects)) == len(ids)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", o) for o in objects)


@given(st.text(min_size=1, max_size=12))
def test_the_hashed_form_of_an_id_is_never_another_ids_kept_form(node_id: str) -> None:
    hashed = object_id(node_id)
    raw = hashed.removeprefix("repedge_")
    assert object_id(raw) == hashed if raw == node_id else object_id(raw) != hashed


# -- timestamps, percentile, topics -------------------------------------------------------


def test_one_wire_timestamp_form() -> None:
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now), now
    moment = datetime(2026, 1, 2, 5, 4, 5, 123000, tzinfo=timezone(timedelta(hours=2)))
    assert to_wire(moment) == "2026-01-02T03:04:05.123Z"
    assert parse_wire("2026-01-02T03:04:05.123Z") == moment.astimezone(UTC)
    with pytest.raises(ValueError, match="timezone"):
        to_wire(datetime(2026, 1, 1))


def test_provisioning_events_use_the_wire_form() -> None:
    from provisioning.install import _now

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", _now())  # not +00:00


def test_nearest_rank_percentile() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 99) == 5.0
    assert percentile(values, 0) == 1.0
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_telemetry_and_bench_use_the_one_percentile() -> None:
    from bench.measure import percentiles
    from node.telemetry import Stats

    samples = [float(x) for x in range(1, 201)]
    stats = Stats()
    stats.add_batch(len(samples), 0, 0, samples)
    latency = stats.snapshot()["latency_ms"]
    bench = percentiles(samples)
    assert (latency["p50"], latency["p99"]) == (bench["p50_ms"], bench["p99_ms"])
    assert bench["p99_ms"] == percentile(samples, 99) == 198.0


def test_topic_builders() -> None:
    assert topics.node_topic("pi-1", topics.STATUS) == "repedge/nodes/pi-1/status"
    assert topics.shared("workers", topics.TWEETS) == "$share/workers/repedge/tweets"
    assert topics.strip_share("$share/workers/repedge/tweets") == topics.TWEETS
    assert topics.strip_share(topics.TWEETS) == topics.TWEETS


# -- the broker endpoint ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("mqtt://localhost:0", "port 0"),
        ("mqtt://localhost:70000", "bad port"),
        ("localhost:-1", "bad port"),
        ("mqtt://bad\nhost:1883", "control characters"),
        ("mqtt://bad host:1883", "spaces"),
    ],
)
def test_endpoint_refuses_bad_hosts_and_ports(url: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        BrokerEndpoint.parse(url)


def test_endpoint_fields_are_checked_when_built_directly() -> None:
    with pytest.raises(EndpointError, match="port"):
        BrokerEndpoint("localhost", 70000)
    with pytest.raises(EndpointError, match="host"):
        BrokerEndpoint("localhost\nlistener 1", 1883)
    assert BrokerEndpoint.parse("mqtts://h:8884").address == ("h", 8884)


# -- the client-setup path: failed connects are logged with their reason ------------------


class LogWaiter(logging.Handler):
    """Collects log records; ``wait`` returns once one matches (no sleeping)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record.getMessage())
            self._cond.notify_all()

    def wait(self, pattern: str, timeout: float = WAIT_S) -> str:
        with self._cond:
            found: list[str] = []
            self._cond.wait_for(
                lambda: found.extend(r for r in self.records if re.search(pattern, r)) or found,
                timeout,
            )
        assert found, f"no log line matching {pattern!r} in {self.records}"
        return found[0]


@pytest.fixture
def log_waiter():
    waiter = LogWaiter()
    logger = logging.getLogger("repedge")
    logger.addHandler(waiter)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield waiter
    logger.removeHandler(waiter)
    logger.setLevel(old)


def _closed_port() -> int:
    port = free_port()
    with socket.socket() as s:  # nothing listens there once this is closed
        s.bind(("127.0.0.1", port))
    return port


@pytest.mark.parametrize(
    "host, why",
    [("127.0.0.1", r"refused the connection"), ("no-such-host.invalid", r"cannot resolve")],
)
def test_every_failed_connect_is_logged_with_reason_and_retry(
    log_waiter: LogWaiter, host: str, why: str
) -> None:
    endpoint = BrokerEndpoint(host, _closed_port())
    client = new_client(endpoint, min_reconnect_s=1, max_reconnect_s=2)
    client.connect_async(*endpoint.address)
    client.loop_start()
    try:
        first = log_waiter.wait(r"connection attempt 1 .* failed")
        second = log_waiter.wait(r"connection attempt 2 .* failed")
    finally:
        client.disconnect()
        client.loop_stop()
    assert re.search(why, first) and "retrying in 1 s" in first, first
    assert "retrying in 2 s" in second, second


def test_a_taken_over_session_names_the_likely_cause(
    mosquitto: Mosquitto, tmp_path, tiny_bundle, log_waiter: LogWaiter
) -> None:
    from edgemodel.inference import Classifier

    classifier = Classifier(tiny_bundle, num_threads=1)
    first, _ = embedded_node(mosquitto, tmp_path / "a", classifier)
    node_id = first.config.node_id
    second, _ = embedded_node(mosquitto, tmp_path / "b", classifier, node_id=node_id)
    first.start()
    try:
        assert first.wait_connected(WAIT_S)
        second.start()
        line = log_waiter.wait(r"session taken over")
    finally:
        second.stop()
        first.stop()
    assert "--node-id" in line and first.config.client_id in line


def test_the_dashboard_shows_why_it_cannot_connect() -> None:
    from dashboard.source import Subscriber
    from dashboard.state import DashboardState
    from harness import wait_until

    state = DashboardState()
    source = Subscriber(state, BrokerEndpoint("127.0.0.1", _closed_port()), [topics.LABELS])
    source.start()
    try:
        wait_until(
            lambda: "refused the connection" in (state.snapshot()["broker_error"] or ""),
            what="the refusal shown as the broker's state",
        )
    finally:
        source.stop()
    assert not state.snapshot()["broker_connected"]
