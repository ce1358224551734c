"""The edge node: MQTT in, micro-batched inference, MQTT out, nothing lost.

``NodeService`` wires the parts together and runs the threads:

* node/mqtt_shell.py, the paho adapter: paho's network thread receives tweets into a
  bounded :class:`~node.batcher.Batcher`, publishes and acks;
* node/ledger.py, the ack ledger: every in-flight publish, the connection epoch; a tweet
  is acked once the broker has acknowledged its record, so a crash at any point leaves
  the tweet with the broker, which redelivers it;
* node/core.py, the pure batch step: one inference thread runs it on each batch (parse,
  deduplicate against node/dedup.py's record store, classify, build records) and
  publishes its records;
* a telemetry thread reports every few seconds.

Extension points (:class:`NodeHooks`, ``service.hooks``; set them before ``start()``):

* ``on_batch``: ``f(report: BatchReport)`` after every batch, on the inference thread
  (counters per record kind and error reason, latencies, batch time): for metrics
  exporters. ``service.stats`` (:class:`~node.telemetry.Stats`) holds the running
  totals and ``service.telemetry()`` the full report.
* ``on_event``: ``f(name, fields)`` for ``connected``, ``disconnected``, ``model_swapped``,
  ``record_store`` (status changes) and ``provisioning`` (events given to
  ``record_event``).
* ``on_ready``: ``f()`` once per service, when a model is loaded *and* the broker has
  acknowledged the tweets subscription (systemd ``READY=1``).
* ``heartbeat``: ``f()`` on every iteration of the inference loop, at least every
  ~0.3 s while the loop is healthy (systemd watchdog).
* ``connect_publishes``: callables returning ``(topic, payload, qos, retain)`` tuples,
  published on every (re)connect (Home Assistant discovery).
* ``subscriptions``: ``(topic filter, qos, handler(topic, payload))``, subscribed on every
  connect, handlers called on the network thread (``homeassistant/status``).

Configuration: ``NodeConfig`` (node/settings.py). ``tweets_subscription`` is what the
node subscribes to: the tweets topic, or ``$share/<share_group>/<tweets topic>`` when the
config carries a ``share_group``. The paho client (credentials, TLS, reconnect, failed
connects logged) comes from common/mqttclient.py.

Models arrive through ``swap_classifier`` (thread-safe, between batches); a
:class:`~node.updates.ModelUpdates` source (provisioning's mount watcher) given to the
constructor is started and stopped with the service and calls it.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from common.supervise import supervised_thread
from common.timestamps import utc_now
from edgemodel.inference import Classifier
from node.batcher import Batcher
from node.core import BatchResult, BatchStep, Inbound
from node.dedup import ResilientStore
from node.memory import release_file_pages, trim_heap
from node.mqtt_shell import Delivery, Handler, MqttShell, Publish
from node.settings import NodeConfig
from node.teach import TeachServer
from node.teach_adapt import ModelSlots, NodeAdapter
from node.teachstore import TeachStore, TextKeeper
from node.telemetry import Stats
from node.updates import ModelUpdates

# At most this often the inference loop gives freed heap back to the OS (node/memory.py).
TRIM_EVERY_S = 1.0

log = logging.getLogger("repedge.node")

EVENTS_KEPT = 20


@dataclass(frozen=True)
class BatchReport:
    """What ``on_batch`` observers get after each batch."""

    result: BatchResult  # .records (each with .kind and, for errors, .reason), counters
    seconds: float  # wall time of the batch step (parse, store, inference)
    queue_depth: int
    record_store: str  # "ok" or "degraded: <reason>"


@dataclass
class NodeHooks:
    on_batch: list[Callable[[BatchReport], None]] = field(default_factory=list)
    on_event: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    on_ready: list[Callable[[], None]] = field(default_factory=list)
    heartbeat: list[Callable[[], None]] = field(default_factory=list)
    connect_publishes: list[Callable[[], Iterable[Publish]]] = field(default_factory=list)
    subscriptions: list[tuple[str, int, Handler]] = field(default_factory=list)


def _call_all(callbacks: Iterable[Callable[..., Any]], *args: Any) -> None:
    for callback in callbacks:
        try:
            callback(*args)
        except Exception:
            log.exception("node hook %r failed", callback)


class NodeService:
    """One node. ``start()``, then ``stop()``; safe to embed (tests, benchmarks)."""

    def __init__(
        self,
        config: NodeConfig,
        classifier: Classifier | None,
        hooks: NodeHooks | None = None,
        updates: ModelUpdates | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or NodeHooks()
        self._updates = updates
        self._classifier = classifier
        self._classifier_lock = threading.Lock()
        self._classifier_ready = threading.Event()
        if classifier is not None:
            self._classifier_ready.set()
        self._batcher: Batcher[Inbound] = Batcher(
            config.max_batch, config.max_wait_ms / 1000, config.queue_size
        )
        self.stats = Stats()
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.store = ResilientStore.at(
            config.store_path, config.dedup_max_records, retry_s=config.store_retry_s
        )
        self.core = BatchStep(config.core_config(), self.store)
        self._store_status = self.store.status
        self._over_delivery_seen = False
        # Texts for teaching: opened in start(); a store that cannot be opened costs
        # teaching, never labelling.
        self.teach_store: TeachStore | None = None
        self.text_keeper: TextKeeper | None = None
        self.teach: TeachServer | None = None
        # Where `node adapt` installs adapted models (provisioning/local.py's LocalSlots,
        # set by node/serve.py before start()); None: the node teaches but cannot adapt.
        self.model_slots: ModelSlots | None = None
        self.interpreter_threads: int | None = None

        self._subscribed = threading.Event()
        self._ready_lock = threading.Lock()
        self._ready_fired = False

        self._stop_worker = threading.Event()
        self._stop_telemetry = threading.Event()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        # Started (supervised: restarted if it dies) by start().
        self._telemetry: threading.Thread | None = None
        self.shell = MqttShell(
            config,
            on_tweet=self._on_tweet,
            status=self._status,
            will=self._will,
            subscriptions=self.hooks.subscriptions,
            connect_publishes=self.hooks.connect_publishes,
            on_subscribed=self._on_subscribed,
            on_connection=self._on_connection,
        )

    # -- hooks for provisioning -------------------------------------------------------

    def swap_classifier(self, classifier: Classifier) -> None:
        """Serve ``classifier`` from the next batch on (never mid-batch); thread-safe."""
        with self._classifier_lock:
            old = self._classifier
            self._classifier = classifier
        self._classifier_ready.set()
        if self.shell.connected.is_set():  # the retained status names the serving model
            self.shell.publish(self.config.node_topic("status"), self._status("online"), 1, True)
        log.info(
            "model swapped: %s -> %s",
            old.bundle.identity() if old else None,
            classifier.bundle.identity(),
        )
        self._event("model_swapped", {"model": classifier.bundle.identity()})
        self._maybe_ready()

    def record_event(self, event: dict[str, Any]) -> None:
        """Publish a provisioning event and keep it for telemetry's "provisioning" list."""
        self._events.append(event)
        self.shell.publish(self.config.node_topic("events"), json.dumps(event, default=str), qos=1)
        self._event("provisioning", event)

    def queue_depth(self) -> int:
        """Tweets received and waiting for inference (metrics read it at scrape time)."""
        return self._batcher.depth()

    def current_classifier(self) -> Classifier | None:
        """The model being served (its interpreter belongs to the inference thread)."""
        with self._classifier_lock:
            return self._classifier

    def model_identity(self) -> dict[str, str] | None:
        with self._classifier_lock:
            clf = self._classifier
        return clf.bundle.identity() if clf else None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.store.open()  # a store that cannot be opened: degraded, retried later
        self._store_status = self.store.status
        self._open_teach_store()
        self._start_teach_server()
        self._worker.start()
        # Labelling never depends on telemetry: if a report fails (say EMFILE reading
        # /proc), the thread says so in the log and comes back.
        self._telemetry = supervised_thread(
            self._telemetry_loop, "telemetry", self._stop_telemetry, log
        )
        self.shell.start()
        if self._updates is not None:
            self._updates.start(self)
        log.info(
            "node %s: broker %s, tweets on %s, records to %s (%s)",
            self.config.node_id,
            self.config.broker,
            self.config.tweets_subscription,
            self.config.store_path,
            self.store.status,
        )

    def wait_connected(self, timeout: float) -> bool:
        """Connected, and the broker has acknowledged the tweets subscription: a tweet
        published from now on reaches this node (before the SUBACK it may not)."""
        deadline = time.monotonic() + timeout
        return self.shell.connected.wait(timeout) and self._subscribed.wait(
            max(0.0, deadline - time.monotonic())
        )

    def stop(self) -> bool:
        """Finish queued work, say offline, disconnect. True if everything was drained.

        Tweets still unacknowledged at the end (broker unreachable, drain timeout) stay
        with the broker and are redelivered on the next start.
        """
        deadline = time.monotonic() + self.config.drain_timeout_s
        if self.config.share_group:  # out of the rotation first (MqttShell.leave_share_group)
            self.shell.leave_share_group(min(2.0, self.config.drain_timeout_s))
        if self._updates is not None:
            try:
                self._updates.stop()
            except Exception:
                log.exception("stopping model updates failed")
        self.shell.draining.set()  # new deliveries are left unacknowledged with the broker
        self._stop_worker.set()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        drained = not self._worker.is_alive() and self.shell.ledger.wait_drained(
            deadline - time.monotonic()
        )
        self._stop_telemetry.set()
        if self._telemetry is not None:
            self._telemetry.join(1.0)
        self.shell.stop(deadline)
        if not self._worker.is_alive():
            self.store.close()
            if self.text_keeper is not None:
                self.text_keeper.stop()
        if self.teach is not None:
            self.teach.stop()
        log.info("node %s stopped (drained: %s)", self.config.node_id, drained)
        return drained

    def _open_teach_store(self) -> None:
        try:
            self.teach_store = TeachStore.in_state_dir(
                self.config.resolved_state_dir, self.config.texts_per_entity
            )
        except Exception as exc:
            log.error("teach store %s cannot be opened (%s): no texts kept for teaching",
                      self.config.resolved_state_dir, exc)  # fmt: skip
            return
        if self.config.texts_per_entity > 0:
            self.text_keeper = TextKeeper(self.teach_store)
            self.text_keeper.start()

    def _start_teach_server(self) -> None:
        if self.teach_store is None:
            return
        adapter = None
        if self.model_slots is not None:
            adapter = NodeAdapter(
                self,
                self.teach_store,
                self.model_slots,
                self.config.resolved_state_dir / "teach-work",
                self.interpreter_threads,
            )
        clf = self.current_classifier()
        self.teach = TeachServer(
            self.config.node_id,
            self.teach_store,
            self.shell.publish,
            adapter,
            list(clf.labels) if clf else None,
        )
        # The shell holds this list: subscribed on every connect from now on.
        self.hooks.subscriptions.append((self.teach.subscription, 1, self.teach.on_request))
        self.teach.start()

    # -- MQTT side --------------------------------------------------------------------

    def _status(self, state: str, reason: str | None = None) -> str:
        status: dict[str, Any] = {
            "node_id": self.config.node_id,
            "state": state,
            "timestamp": utc_now(),
            "model": self.model_identity(),
        }
        if reason:
            status["reason"] = reason
        return json.dumps(status)

    def _will(self) -> str:
        # The broker publishes the will whenever it notices the node gone; its content is
        # fixed when the node connects. So it carries `connected_at` (refreshed before
        # every connect), not a `timestamp` that would pass for the time of death.
        return json.dumps(
            {
                "node_id": self.config.node_id,
                "state": "offline",
                "reason": "connection lost",
                "connected_at": utc_now(),
                "model": self.model_identity(),
            }
        )

    def _on_tweet(self, payload: bytes, delivery: Delivery) -> None:
        item = Inbound(payload, delivery, time.monotonic())
        # Receive Maximum keeps this from blocking in practice; after a reconnect
        # redeliveries can briefly exceed it, and blocking here is the backpressure.
        while not self._batcher.put(item, timeout=0.5):
            if self.shell.draining.is_set():
                return

    def _on_subscribed(self) -> None:
        self._subscribed.set()
        self._maybe_ready()

    def _on_connection(self, up: bool) -> None:
        self._event("connected" if up else "disconnected", {})

    def _maybe_ready(self) -> None:
        if not (self._subscribed.is_set() and self._classifier_ready.is_set()):
            return
        with self._ready_lock:
            if self._ready_fired:
                return
            self._ready_fired = True
        _call_all(self.hooks.on_ready)

    def _event(self, name: str, fields: dict[str, Any]) -> None:
        _call_all(self.hooks.on_event, name, fields)

    # -- inference --------------------------------------------------------------------

    def _work(self) -> None:
        # A weak reference: a strong one (like any local left holding a model while the
        # loop idles) would keep a replaced model's interpreter, ~20 MB of packed weights
        # for a 20 MB int8 model, alive until the next batch or forever.
        trimmed: weakref.ref[Classifier] | None = None
        swapped = False  # a model was served before the current one
        trimmed_heap_at = time.monotonic()
        untrimmed = False  # batches ran since memory was last given back
        while not (self._stop_worker.is_set() and self._batcher.depth() == 0):
            _call_all(self.hooks.heartbeat)
            if not self._classifier_ready.wait(0.2):
                if self._stop_worker.is_set():
                    return  # no model was ever installed; queued tweets stay with the broker
                continue
            batch = self._batcher.next_batch(timeout=0.1)
            if not batch:
                if untrimmed and time.monotonic() - trimmed_heap_at >= TRIM_EVERY_S:
                    self._give_memory_back()  # the last batches came too close together
                    trimmed_heap_at, untrimmed = time.monotonic(), False
                continue
            with self._classifier_lock:
                classifier = self._classifier
            assert classifier is not None
            started = time.monotonic()
            result = self.core.run(batch, classifier)
            seconds = time.monotonic() - started
            for out in result.records:
                self.shell.publish(out.topic, out.payload, qos=1, completes=[out.inbound.handle])
            if self.text_keeper is not None and result.labelled_tweets:
                sha = classifier.bundle.identity().get("sha256")
                self.text_keeper.offer([(t, p, sha) for t, p in result.labelled_tweets])
            self.stats.add_batch(
                result.labelled,
                result.errors,
                result.duplicates,
                result.latencies_ms,
                id_reused=result.id_reused,
                retried=result.retried_singly,
            )
            self._check_store()
            self._check_flow_control()
            if self.hooks.on_batch:
                report = BatchReport(result, seconds, self._batcher.depth(), self.store.status)
                _call_all(self.hooks.on_batch, report)
            if result.ran_inference and (trimmed is None or trimmed() is not classifier):
                # The first inference has packed the weights; the mapped file is dead weight.
                release_file_pages(classifier.model_file)
                trimmed = weakref.ref(classifier)
                if swapped:
                    # A new model serves: the previous one was freed when the swap dropped
                    # its last reference; collect any cycle and give the freed heap back.
                    gc.collect()
                    trim_heap()
                swapped = True
                trimmed_heap_at, untrimmed = time.monotonic(), False
            elif self._batcher.depth() == 0 and time.monotonic() - trimmed_heap_at >= TRIM_EVERY_S:
                self._give_memory_back()
                trimmed_heap_at, untrimmed = time.monotonic(), False
            else:
                untrimmed = True
            # Hold no model between batches: after a swap the old one must go at once.
            classifier = None

    def _give_memory_back(self) -> None:
        """Drained: give back what the batches freed (glibc's heaps), and unmap the model
        file's pages the embedding lookup faulted in since the last time (it reads the
        token table from the mapped file; ~9 MiB of 2.0.0's stayed resident). About 1 ms;
        pages read again come from the page cache. On the inference thread only."""
        with self._classifier_lock:
            classifier = self._classifier
        if classifier is not None:
            release_file_pages(classifier.model_file)
        trim_heap()

    def _check_flow_control(self) -> None:
        # Tweets held unacknowledged: those in the queue and those whose record waits for
        # the broker's PUBACK. The broker should never let this exceed Receive Maximum.
        held = self._batcher.depth() + self.shell.ledger.stats().in_flight_qos1
        if self._over_delivery_seen or held <= 2 * self.shell.receive_maximum:
            return
        self._over_delivery_seen = True
        log.warning(
            "the broker has %d tweets out to this node unacknowledged, beyond its Receive "
            "Maximum of %d: Mosquitto before 2.0.13 ignores it once acks flow "
            "(eclipse/mosquitto#2306, fixed by 330bf6e). Record acknowledgements then queue "
            "behind the broker's whole backlog and memory grows with it; see docs/node.md",
            held,
            self.shell.receive_maximum,
        )
        self._event("broker_over_delivery", {"held": held})

    def _check_store(self) -> None:
        status = self.store.status
        if status != self._store_status:
            self._store_status = status
            self._event("record_store", {"status": status})

    # -- telemetry --------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        return {
            "node_id": self.config.node_id,
            "timestamp": utc_now(),
            **self.stats.snapshot(),
            "queue_depth": self._batcher.depth(),
            "queue_size": self._batcher.maxsize,
            "connected": self.shell.connected.is_set(),
            "record_store": self.store.status,
            # Records published and not yet acknowledged by the broker (their tweets wait).
            "in_flight_records": self.shell.ledger.stats().in_flight_qos1,
            "model": self.model_identity(),
            "provisioning": list(self._events),
            "teach_texts": self._teach_texts_report(),
        }

    def _teach_texts_report(self) -> dict[str, int] | None:
        keeper = self.text_keeper
        if keeper is None:
            return None
        return {"kept": keeper.kept, "dropped": keeper.dropped, "failed": keeper.failed}

    def _telemetry_loop(self) -> None:
        while not self._stop_telemetry.wait(self.config.telemetry_interval_s):
            if self.shell.connected.is_set():
                self.publish_telemetry()

    def publish_telemetry(self) -> bool:
        """Publish one telemetry report now (QoS 0); False if it was not sent."""
        return self.shell.publish(
            self.config.node_topic("telemetry"), json.dumps(self.telemetry()), 0
        )
