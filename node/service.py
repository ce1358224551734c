"""The edge node: MQTT in, micro-batched inference, MQTT out, nothing lost.

Threads: paho's network thread receives tweets into a bounded :class:`Batcher`; one
inference thread classifies batches, stores each record (:class:`RecordStore`) and
publishes it; a telemetry thread reports every few seconds. An incoming tweet is
acknowledged to the broker only once the broker has acknowledged its record, so a crash
at any point leaves the tweet with the broker, which redelivers it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgemodel.inference import Classifier, EmptyTextError
from node.batcher import Batcher, bucket_by_length
from node.dedup import DEFAULT_MAX_RECORDS, RecordStore
from node.memory import release_file_pages
from node.messages import (
    DEFAULT_MAX_BYTES,
    BadInput,
    Tweet,
    dumps,
    error_record,
    label_record,
    now_iso,
    parse_tweet,
)
from node.paths import default_state_dir
from node.telemetry import Stats

log = logging.getLogger("repedge.node")

EVENTS_KEPT = 20
# MQTT 5 caps Receive Maximum at 65,535.
_MAX_RECEIVE_MAXIMUM = 65_535


@dataclass
class NodeConfig:
    node_id: str = field(default_factory=socket.gethostname)
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tweets_topic: str = "repedge/tweets"
    labels_topic: str = "repedge/labels"
    errors_topic: str = "repedge/errors"
    telemetry_interval_s: float = 5.0
    max_batch: int = 32
    # Rows x padded length per interpreter call; see batcher.bucket_by_length.
    max_batch_tokens: int = 256
    max_wait_ms: float = 5.0
    queue_size: int = 256
    max_bytes: int = DEFAULT_MAX_BYTES
    state_dir: Path | None = None
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    dedup_max_records: int = DEFAULT_MAX_RECORDS
    drain_timeout_s: float = 10.0
    # The brand a node monitors: the entity of tweets that arrive without one.
    default_entity: str | None = None

    def __post_init__(self) -> None:
        if not self.node_id or any(c in self.node_id for c in "/+#\x00"):
            raise ValueError(f"node id {self.node_id!r} must be non-empty, without / + #")

    @property
    def client_id(self) -> str:
        # Fixed per node: the broker keeps this session's queue while the node is away.
        return f"repedge-node-{self.node_id}"

    def node_topic(self, leaf: str) -> str:
        return f"repedge/nodes/{self.node_id}/{leaf}"

    @property
    def store_path(self) -> Path:
        return (self.state_dir or default_state_dir(self.node_id)) / "records.sqlite"


@dataclass
class _Inbound:
    payload: bytes
    mid: int
    qos: int
    epoch: int  # which connection delivered it; acks are only valid on that connection
    received: float


@dataclass
class _Outbound:
    inbound: _Inbound
    tweet_id: str | None
    topic: str
    payload: str
    kind: str  # "label" | "error"


class NodeService:
    """One node. ``start()``, then ``stop()``; safe to embed (tests, benchmarks)."""

    def __init__(self, config: NodeConfig, classifier: Classifier | None) -> None:
        self.config = config
        self._classifier = classifier
        self._classifier_lock = threading.Lock()
        self._classifier_ready = threading.Event()
        if classifier is not None:
            self._classifier_ready.set()
        # The broker never has more unacknowledged tweets out to us than the queue holds,
        # so the network thread never blocks on a full queue in steady state.
        self._receive_maximum = min(config.queue_size, _MAX_RECEIVE_MAXIMUM)
        self._batcher: Batcher[_Inbound] = Batcher(
            config.max_batch, config.max_wait_ms / 1000, config.queue_size
        )
        self.stats = Stats()
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._store: RecordStore | None = None

        self._ack_lock = threading.Condition()
        self._epoch = 0
        self._pending: dict[int, list[_Inbound]] = {}  # publish mid -> tweets it completes
        self._early: set[int] = set()  # publishes acknowledged before we registered them
        self._connected = threading.Event()

        self._draining = threading.Event()
        self._stop_worker = threading.Event()
        self._stop_telemetry = threading.Event()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._telemetry = threading.Thread(
            target=self._telemetry_loop, name="telemetry", daemon=True
        )
        self._client = self._make_client()

    # -- hooks for provisioning -------------------------------------------------------

    def swap_classifier(self, classifier: Classifier) -> None:
        """Serve ``classifier`` from the next batch on (never mid-batch); thread-safe."""
        with self._classifier_lock:
            old = self._classifier
            self._classifier = classifier
        self._classifier_ready.set()
        if self._connected.is_set():  # the retained status names the serving model
            self._publish(self.config.node_topic("status"), self._status("online"), 1, True)
        log.info(
            "model swapped: %s -> %s",
            old.bundle.identity() if old else None,
            classifier.bundle.identity(),
        )

    def record_event(self, event: dict[str, Any]) -> None:
        """Publish a provisioning event and keep it for telemetry's "provisioning" list."""
        self._events.append(event)
        self._publish(self.config.node_topic("events"), json.dumps(event, default=str), qos=1)

    def model_identity(self) -> dict[str, str] | None:
        with self._classifier_lock:
            clf = self._classifier
        return clf.bundle.identity() if clf else None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._store = RecordStore(self.config.store_path, self.config.dedup_max_records)
        self._worker.start()
        self._telemetry.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        # loop_start retries the first connection too: a broker that is not up yet is
        # waited for with backoff (reconnect_delay_set), not fatal.
        self._client.loop_start()
        log.info(
            "node %s: broker %s:%d, tweets on %s, records to %s",
            self.config.node_id,
            self.config.host,
            self.config.port,
            self.config.tweets_topic,
            self.config.store_path,
        )

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> bool:
        """Finish queued work, say offline, disconnect. True if everything was drained.

        Tweets still unacknowledged at the end (broker unreachable, drain timeout) stay
        with the broker and are redelivered on the next start.
        """
        deadline = time.monotonic() + self.config.drain_timeout_s
        self._draining.set()  # new deliveries are left unacknowledged with the broker
        self._stop_worker.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        drained = not self._worker.is_alive() and self._wait_pending(deadline)
        self._stop_telemetry.set()
        self._telemetry.join(1.0)
        if self._connected.is_set():
            info = self._publish(
                self.config.node_topic("status"), self._status("offline", "shutdown"), 1, True
            )
            if info is not None:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()
        if not self._worker.is_alive() and self._store is not None:
            self._store.close()
        log.info("node %s stopped (drained: %s)", self.config.node_id, drained)
        return drained

    def _wait_pending(self, deadline: float) -> bool:
        with self._ack_lock:
            return self._ack_lock.wait_for(
                lambda: not self._pending, max(0.0, deadline - time.monotonic())
            )

    # -- MQTT -------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        client.will_set(
            self.config.node_topic("status"),
            self._status("offline", "connection lost"),
            qos=1,
            retain=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = _no_delay
        return client

    def _status(self, state: str, reason: str | None = None) -> str:
        status: dict[str, Any] = {
            "node_id": self.config.node_id,
            "state": state,
            "timestamp": now_iso(),
            "model": self.model_identity(),
        }
        if reason:
            status["reason"] = reason
        return json.dumps(status)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            self._epoch += 1
        log.info("connected (session present: %s)", flags.session_present)
        client.subscribe(self.config.tweets_topic, options=SubscribeOptions(qos=1))
        self._publish(self.config.node_topic("status"), self._status("online"), 1, True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._draining.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        if self._draining.is_set():
            return
        item = _Inbound(message.payload, message.mid, message.qos, self._epoch, time.monotonic())
        # Receive Maximum keeps this from blocking in practice; after a reconnect
        # redeliveries can briefly exceed it, and blocking here is the backpressure.
        while not self._batcher.put(item, timeout=0.5):
            if self._draining.is_set():
                return

    def _publish(
        self, topic: str, payload: str, qos: int, retain: bool = False, completes=()
    ) -> mqtt.MQTTMessageInfo | None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.error("publish on %s failed: %s", topic, mqtt.error_string(info.rc))
            return None
        if qos == 0:
            return info
        # paho may report the PUBACK before publish() returns here; _early covers that.
        with self._ack_lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                done = True
            else:
                self._pending[info.mid] = list(completes)
                done = False
        if done:
            self._ack(completes)
        return info

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker rejected a publish (mid %d): %s", mid, reason_code)
        with self._ack_lock:
            completes = self._pending.pop(mid, None)
            if completes is None:
                self._early.add(mid)
                return
            if not self._pending:
                self._ack_lock.notify_all()
        self._ack(completes)

    def _ack(self, items: Iterable[_Inbound]) -> None:
        epoch = self._epoch
        for item in items:
            # An ack from an earlier connection would name a packet id the broker may have
            # reused; the broker redelivers those tweets and the record store answers them.
            if item.qos > 0 and item.epoch == epoch:
                self._client.ack(item.mid, item.qos)

    # -- inference --------------------------------------------------------------------

    def _work(self) -> None:
        trimmed: Classifier | None = None
        while not (self._stop_worker.is_set() and self._batcher.depth() == 0):
            if not self._classifier_ready.wait(0.2):
                if self._stop_worker.is_set():
                    return  # no model was ever installed; queued tweets stay with the broker
                continue
            batch = self._batcher.next_batch(timeout=0.1)
            if not batch:
                continue
            with self._classifier_lock:
                classifier = self._classifier
            ran_inference = False
            try:
                ran_inference = self._process(batch, classifier)
            except Exception:
                # Unacknowledged, these tweets come back after the next reconnect.
                log.exception("batch of %d failed; left to redelivery", len(batch))
            if ran_inference and classifier is not trimmed:
                # The first inference has packed the weights; the mapped file is dead weight.
                release_file_pages(classifier.bundle.model_path)
                trimmed = classifier

    def _process(self, batch: list[_Inbound], classifier: Classifier) -> bool:
        """Classify, store, publish one batch; True if the interpreter ran."""
        cfg = self.config
        store = self._store
        assert store is not None
        out: list[_Outbound] = []
        to_classify: list[tuple[_Inbound, Tweet, Any]] = []
        duplicates = 0
        parsed: list[tuple[_Inbound, Tweet]] = []
        for item in batch:
            try:
                parsed.append((item, parse_tweet(item.payload, cfg.max_bytes, cfg.default_entity)))
            except BadInput as exc:
                out.append(self._error(item, exc.tweet_id, exc.reason, exc.detail))
        known = store.get_many(tweet.id for _, tweet in parsed)
        for item, tweet in parsed:
            stored = known.get(tweet.id)
            if stored is not None:
                duplicates += 1
                out.append(_Outbound(item, tweet.id, stored[0], stored[1], "duplicate"))
                continue
            try:
                encoded = classifier.encode(tweet.text, tweet.entity)
            except EmptyTextError as exc:
                out.append(self._error(item, tweet.id, "no_known_tokens", str(exc)))
                continue
            to_classify.append((item, tweet, encoded))

        model = classifier.bundle.identity()
        groups = bucket_by_length(to_classify, lambda entry: len(entry[2]), cfg.max_batch_tokens)
        for group in groups:
            try:
                predictions = classifier.predict([encoded for _, _, encoded in group])
            except Exception as exc:  # a broken model must not stop the node
                log.exception("inference failed")
                out.extend(self._error(i, t.id, "inference_failed", str(exc)) for i, t, _ in group)
                continue
            done = time.monotonic()
            for (item, tweet, _), prediction in zip(group, predictions, strict=True):
                latency = (done - item.received) * 1000
                record = label_record(tweet, prediction, model, cfg.node_id, latency)
                out.append(_Outbound(item, tweet.id, cfg.labels_topic, dumps(record), "label"))

        # Store first, publish second: whatever reaches the broker can be repeated verbatim.
        stored_now = store.put_if_absent(
            (o.tweet_id, o.topic, o.payload) for o in out if o.tweet_id and o.kind != "duplicate"
        )
        latencies = []
        for o in out:
            topic, payload = (
                stored_now.get(o.tweet_id, (o.topic, o.payload))
                if o.tweet_id
                else (
                    o.topic,
                    o.payload,
                )
            )
            self._publish(topic, payload, qos=1, completes=[o.inbound])
            if o.kind == "label":
                latencies.append((time.monotonic() - o.inbound.received) * 1000)
        errors = sum(1 for o in out if o.kind == "error")
        self.stats.add_batch(len(latencies), errors, duplicates, latencies)
        return bool(groups)

    def _error(self, item: _Inbound, tweet_id: str | None, reason: str, detail: str) -> _Outbound:
        record = error_record(tweet_id, reason, detail, self.config.node_id, len(item.payload))
        log.info("bad input (%s): %s", reason, detail)
        return _Outbound(item, tweet_id, self.config.errors_topic, dumps(record), "error")

    # -- telemetry --------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        report = {
            "node_id": self.config.node_id,
            "timestamp": now_iso(),
            **self.stats.snapshot(),
            "queue_depth": self._batcher.depth(),
            "queue_size": self._batcher.maxsize,
            "connected": self._connected.is_set(),
            "model": self.model_identity(),
            "provisioning": list(self._events),
        }
        return report

    def _telemetry_loop(self) -> None:
        while not self._stop_telemetry.wait(self.config.telemetry_interval_s):
            if self._connected.is_set():
                self._publish(self.config.node_topic("telemetry"), json.dumps(self.telemetry()), 0)


def _no_delay(client, userdata, sock) -> None:
    # Records are small: without this, Nagle's algorithm can hold one back for ~40 ms.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
