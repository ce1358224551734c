"""Prometheus metrics for one node, served on ``/metrics`` by ``node start --metrics-port``.

The server is common/httpserver.py with small limits (a Prometheus needs one connection):
whatever reaches the port cannot exhaust the node's threads or file descriptors, and the
inference thread never waits for it.

Everything lives in a registry of its own (not prometheus_client's global one), so two
nodes embedded in one process (tests, benchmarks) never share counters. Counters are
updated by the inference thread once per batch; gauges that the node already knows
(queue depth, connection) are read at scrape time instead of being pushed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder

from common.httpserver import HttpServer, Limits, Request, Response, Route
from node.telemetry import cpu_temperature

if TYPE_CHECKING:
    from node.service import BatchReport, NodeService

log = logging.getLogger("repedge.node")

# Seconds from a tweet's arrival to its label (the record's latency_ms): a batch of one on
# a Pi is a few ms, a full batch behind a backlog can reach a second.
LATENCY_BUCKETS_S = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
# Tweets per batch: powers of two up to the largest --max-batch anyone should use.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MODEL_LABELS = ("name", "version", "variant", "sha256", "bundle_sha256")
# Entities with series of their own in repedge_entity_labels_total: the node's --entity
# always, then the first ones seen up to this cap; the rest are summed under OTHER_ENTITY,
# so tweets naming ever new brands cannot grow the scrape (Prometheus cardinality).
MAX_METRIC_ENTITIES = 20
OTHER_ENTITY = "_other"
# provisioning/install.py and provisioning/watch.py; primed at 0 so increase() sees the first.
PROVISIONING_EVENTS = ("install_started", "installed", "rejected", "swap_failed")
# /metrics is scraped by one Prometheus every few seconds. 64 sockets: at the limit the
# oldest one without a request is closed for each newcomer, so the pool is also the time a
# real scraper has to send its request during a connect flood. It still leaves the node's
# file descriptors to MQTT, the record store and the model (LimitNOFILE in deploy/systemd
# leaves room above it). No event streams, no request bodies.
METRICS_LIMITS = Limits(
    max_connections=64,
    max_streams=1,
    request_timeout_s=10.0,
    write_timeout_s=10.0,
    max_body_bytes=0,
    handler_threads=1,
)
# Plain text: nothing here is a page, so nothing may run if a browser opens it.
METRICS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class NodeMetrics:
    """The node's counters and gauges, in their own :class:`CollectorRegistry`.

    ``queue_depth`` and ``connected`` are callables the node already has; they are read
    when Prometheus scrapes, so they are never stale.
    """

    def __init__(
        self,
        node_id: str,
        queue_depth: Callable[[], int] | None = None,
        connected: Callable[[], bool] | None = None,
        process: bool = True,
        entities: Iterable[str] = (),
        max_entities: int = MAX_METRIC_ENTITIES,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.labels = Counter(
            "repedge_labels", "Tweets labelled, by predicted label.", ["label"], registry=r
        )
        self.entity_labels = Counter(
            "repedge_entity_labels",
            "Tweets labelled per entity (the node's --entity and the first "
            f"{max_entities} seen; others as {OTHER_ENTITY}), by label and related "
            "(true, false, unknown).",
            ["entity", "label", "related"],
            registry=r,
        )
        self._entities: set[str] = set(entities)
        self._max_entities = max(max_entities, len(self._entities))
        self.errors = Counter(
            "repedge_errors", "Error records published, by reason.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "repedge_duplicates",
            "Redelivered tweets answered from the record store (no inference).",
            registry=r,
        )
        self.batches = Counter("repedge_batches", "Batches processed.", registry=r)
        self.latency = Histogram(
            "repedge_latency_seconds",
            "Seconds from a tweet's arrival to its label (the record's latency_ms).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "repedge_batch_size",
            "Tweets per processed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "repedge_queue_depth", "Tweets received and waiting for inference.", registry=r
        )
        self.connected = Gauge(
            "repedge_connected", "1 while connected to the MQTT broker, else 0.", registry=r
        )
        self.model_info = Gauge(
            "repedge_model_info",
            "The model being served (value 1); replaced on a hot swap.",
            list(MODEL_LABELS),
            registry=r,
        )
        self.node_info = Gauge(
            "repedge_node_info", "This node's id (value 1).", ["node_id"], registry=r
        )
        self.provisioning_events = Counter(
            "repedge_provisioning_events",
            "Provisioning events (USB model updates), by event.",
            ["event"],
            registry=r,
        )
        for event in PROVISIONING_EVENTS:
            self.provisioning_events.labels(event=event)
        self.last_provisioning_event = Gauge(
            "repedge_provisioning_last_event_timestamp_seconds",
            "Unix time of the last provisioning event (0: none yet).",
            registry=r,
        )
        temperature = Gauge(
            "repedge_cpu_temperature_celsius",
            "Hottest CPU sensor, where the OS exposes one (NaN otherwise).",
            registry=r,
        )
        temperature.set_function(lambda: _or_nan(cpu_temperature()))
        if process:
            # process_resident_memory_bytes, process_cpu_seconds_total, ... (Linux /proc).
            ProcessCollector(registry=r)

        self.node_info.labels(node_id=node_id).set(1)
        if queue_depth is not None:
            self.queue_depth.set_function(lambda: float(queue_depth()))
        if connected is not None:
            self.connected.set_function(lambda: 1.0 if connected() else 0.0)

    # -- updates from the node --------------------------------------------------------

    def observe_batch(
        self,
        labels: Iterable[str],
        error_reasons: Iterable[str],
        duplicates: int,
        latencies_s: Iterable[float],
        batch_size: int,
    ) -> None:
        """One processed batch: the label of each labelled tweet, the reason of each error
        record, the redeliveries answered from the store, and label latencies."""
        for label in labels:
            self.labels.labels(label=label).inc()
        for reason in error_reasons:
            self.errors.labels(reason=reason).inc()
        if duplicates:
            self.duplicates.inc(duplicates)
        for seconds in latencies_s:
            self.latency.observe(seconds)
        self.batches.inc()
        self.batch_size.observe(batch_size)

    def observe_entities(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Label records of tweets with an entity: counted per entity, bounded."""
        for record in records:
            entity = record.get("entity")
            if not isinstance(entity, str):
                continue
            if entity not in self._entities:
                if len(self._entities) >= self._max_entities:
                    entity = OTHER_ENTITY
                else:
                    self._entities.add(entity)
            related = record.get("related")
            self.entity_labels.labels(
                entity=entity,
                label=str(record.get("label")),
                related="unknown" if not isinstance(related, bool) else str(related).lower(),
            ).inc()

    def set_model(self, identity: Mapping[str, Any] | None, labels: Iterable[str] = ()) -> None:
        """The model now served (None: none yet). ``labels`` (the model's classes) start
        at 0 so that ``rate()`` sees the first label of each class."""
        self.model_info.clear()
        if identity is not None:
            self.model_info.labels(*(str(identity.get(k, "")) for k in MODEL_LABELS)).set(1)
        for label in labels:
            self.labels.labels(label=label)

    def record_event(self, event: Mapping[str, Any]) -> None:
        self.provisioning_events.labels(event=str(event.get("event", "unknown"))).inc()
        self.last_provisioning_event.set(time.time())

    def set_connected(self, connected: bool) -> None:
        """For nodes that push the state rather than giving a callable."""
        self.connected.set(1 if connected else 0)

    # -- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` (and ``/healthz``) on a supervised background thread.

        Raises OSError when the port cannot be bound (in use, no permission).
        """
        server = MetricsServer(self, (host, port))
        server.start()
        log.info("metrics on %s", server.url + "metrics")
        return server

    def _scrape(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encoder(self.registry), content_type)


def attach(
    service: NodeService, port: int, host: str = "127.0.0.1", labels: Iterable[str] = ()
) -> MetricsServer:
    """Feed a node's metrics from its hooks and serve them; call before ``start()``.

    Raises OSError when the port cannot be bound (in use, no permission).
    """
    default_entity = service.config.default_entity
    metrics = NodeMetrics(
        service.config.node_id,
        queue_depth=service.queue_depth,
        connected=service.shell.connected.is_set,
        entities=[default_entity] if default_entity else (),
    )
    metrics.set_model(service.model_identity(), labels)

    def on_batch(report: BatchReport) -> None:
        records = report.result.records
        # The record carries the label and entity; the batch result only counts them.
        labelled = [json.loads(r.payload) for r in records if r.kind == "label"]
        metrics.observe_entities(labelled)
        metrics.observe_batch(
            (record["label"] for record in labelled),
            (r.reason or "unknown" for r in records if r.kind == "error"),
            report.result.duplicates,
            (ms / 1000 for ms in report.result.latencies_ms),
            batch_size=len(records),
        )

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name == "model_swapped":
            metrics.set_model(fields.get("model"))
        elif name == "provisioning":
            metrics.record_event(fields)

    server = metrics.serve(port, host)
    service.hooks.on_batch.append(on_batch)
    service.hooks.on_event.append(on_event)
    return server


class MetricsServer(HttpServer):
    """A running ``/metrics`` server; ``close()`` stops it and frees the port."""

    def __init__(self, metrics: NodeMetrics, address: tuple[str, int]) -> None:
        routes = {
            "/metrics": Route(metrics._scrape),
            "/healthz": Route(lambda _r: Response(200, b"ok\n"), inline=True),
        }
        super().__init__(
            address, routes, name="metrics", limits=METRICS_LIMITS, headers=METRICS_HEADERS
        )


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
