"""Prometheus metrics: the registry, the /metrics endpoint of a real node, the Grafana JSON."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edgemodel.bundle import ModelBundle, update_manifest
from edgemodel.inference import Classifier
from harness import WAIT_S, Collector, embedded_node, free_port, publish, wait_until
from node.metrics import NodeMetrics, attach

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "dashboard" / "grafana" / "repedge-node.json"


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_registry_counts_what_it_is_told() -> None:
    depth = [3]
    metrics = NodeMetrics("n1", queue_depth=lambda: depth[0], connected=lambda: True)
    identity = {
        "name": "m",
        "version": "1.0.0",
        "variant": "int8",
        "sha256": "ab" * 32,
        "bundle_sha256": "cd" * 32,
    }
    metrics.set_model(identity, labels=["negative", "neutral", "positive"])
    metrics.observe_batch(["positive", "positive", "negative"], ["malformed_json"], 1,
                          [0.004, 0.02, 0.3], batch_size=5)  # fmt: skip
    metrics.record_event({"event": "installed"})
    text = metrics.render().decode()

    assert value(text, "repedge_labels_total", label="positive") == 2
    assert value(text, "repedge_labels_total", label="neutral") == 0  # primed by set_model
    assert value(text, "repedge_errors_total", reason="malformed_json") == 1
    assert value(text, "repedge_duplicates_total") == 1
    assert value(text, "repedge_latency_seconds_count") == 3
    assert value(text, "repedge_latency_seconds_bucket", le="0.005") == 1
    assert value(text, "repedge_batch_size_bucket", le="4.0") == 0
    assert value(text, "repedge_batch_size_bucket", le="8.0") == 1
    assert value(text, "repedge_queue_depth") == 3
    assert value(text, "repedge_connected") == 1
    assert value(text, "repedge_provisioning_events_total", event="installed") == 1
    assert value(text, "repedge_provisioning_last_event_timestamp_seconds") > 0
    [info] = [s for s in samples(text) if s.name == "repedge_model_info"]
    assert info.labels == identity and info.value == 1
    assert value(text, "process_resident_memory_bytes") > 0

    # A hot swap replaces the model series rather than adding one.
    metrics.set_model({**identity, "version": "1.1.0"})
    depth[0] = 0
    text = metrics.render().decode()
    [info] = [s for s in samples(text) if s.name == "repedge_model_info"]
    assert info.labels["version"] == "1.1.0"
    assert value(text, "repedge_queue_depth") == 0


def test_two_nodes_in_one_process_keep_separate_counts() -> None:
    a, b = NodeMetrics("a", process=False), NodeMetrics("b", process=False)
    a.observe_batch(["positive"], [], 0, [0.01], batch_size=1)
    assert value(b.render().decode(), "repedge_labels_total") == 0
    assert value(a.render().decode(), "repedge_labels_total") == 1


def test_served_over_http() -> None:
    metrics = NodeMetrics("n1", process=False)
    metrics.observe_batch(["neutral"], [], 0, [0.01], batch_size=1)
    server = metrics.serve(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
    finally:
        server.close()
    assert value(text, "repedge_labels_total", label="neutral") == 1


def grafana_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(GRAFANA.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_grafana_dashboard_is_an_importable_prometheus_dashboard() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert isinstance(dashboard["schemaVersion"], int)
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"], panel["title"]
    assert len(grafana_exprs()) >= 10


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:repedge|process)_[a-zA-Z0-9_]+)", expr))


def check_grafana_against(text: str) -> None:
    """Every metric a panel queries is one the node exports."""
    exported = {s.name for s in samples(text)}
    for title, expr in grafana_exprs():
        names = metric_names(expr)
        assert names, f"{title}: {expr} queries no repedge metric"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"


def test_grafana_queries_name_exported_metrics() -> None:
    metrics = NodeMetrics("n1")
    metrics.set_model({"name": "m", "version": "1", "variant": "int8", "sha256": "0"})
    metrics.observe_batch(["positive"], ["too_large"], 1, [0.01], batch_size=2)
    metrics.record_event({"event": "installed"})
    check_grafana_against(metrics.render().decode())


# -- a real node on a real Mosquitto ----------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def scrape_until(port: int, ready, what: str) -> str:
    """Scrape until ``ready(text)``: counters follow the records by up to one batch."""
    seen = ["(not serving yet)"]

    def holds():
        try:
            seen[0] = scrape(port)
        except urllib.error.URLError:
            seen[0] = "(not serving yet)"
            return None
        return ready(seen[0]) and (seen[0],)

    return wait_until(holds, interval=0.2, what=lambda: f"{what}; last scrape:\n{seen[0]}")[0]


def test_node_metrics_match_the_records_it_published(
    node_factory, mosquitto, topics, tiny_bundle
) -> None:
    port = free_port()
    node = node_factory(extra=["--metrics-port", str(port), "--no-ha-discovery"])
    watcher = Collector(
        mosquitto, [topics.labels, topics.errors, f"repedge/nodes/{node.node_id}/#"]
    )
    try:
        node.start_and_wait_online(watcher)
        tag = uuid.uuid4().hex[:6]
        good = [
            json.dumps({"id": f"{tag}-{i}", "text": f"great phone number {i}"}) for i in range(12)
        ]
        bad = [
            "{not json",
            json.dumps({"id": f"{tag}-b", "text": 5}),
            json.dumps({"id": f"{tag}-c", "text": "  "}),
        ]
        publish(mosquitto, topics.tweets, [*good, *bad])
        labels = watcher.wait_count(topics.labels, len(good))
        errors = watcher.wait_count(topics.errors, len(bad))
        by_label = Counter(m.json()["label"] for m in labels)
        by_reason = Counter(m.json()["reason"] for m in errors)
        assert by_reason == {"malformed_json": 1, "bad_field": 1, "empty_text": 1}

        text = scrape_until(
            port,
            lambda t: (
                value(t, "repedge_labels_total") == len(good)
                and value(t, "repedge_errors_total") == len(bad)
            ),
            f"{len(good)} labels and {len(bad)} errors in /metrics; node log:\n{node.log()}",
        )
        for label, count in by_label.items():
            assert value(text, "repedge_labels_total", label=label) == count
        for reason, count in by_reason.items():
            assert value(text, "repedge_errors_total", reason=reason) == count
        assert value(text, "repedge_latency_seconds_count") == len(good)
        assert value(text, "repedge_batch_size_sum") == len(good) + len(bad)
        [info] = [s for s in samples(text) if s.name == "repedge_model_info"]
        assert info.labels == tiny_bundle.identity() and info.value == 1
        [node_info] = [s for s in samples(text) if s.name == "repedge_node_info"]
        assert node_info.labels == {"node_id": node.node_id}
        assert value(text, "repedge_connected") == 1
        assert value(text, "process_resident_memory_bytes") > 0
        check_grafana_against(text)  # the dashboard's queries against a real scrape
    finally:
        watcher.close()


def test_hot_swap_and_provisioning_events_reach_the_metrics(
    mosquitto, tiny_bundle, tmp_path
) -> None:
    """The hooks path: an embedded node, a model swap and a provisioning event."""
    root = tmp_path / "v2"
    shutil.copytree(tiny_bundle.root, root)
    update_manifest(root, version="0.0.2")
    second = ModelBundle.load(root)
    service, _ = embedded_node(
        mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1), telemetry_interval_s=5.0
    )
    server = attach(service, 0, labels=tiny_bundle.labels)
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        text = scrape_until(server.port, lambda t: value(t, "repedge_connected") == 1, "online")
        [info] = [s for s in samples(text) if s.name == "repedge_model_info"]
        assert info.labels == tiny_bundle.identity()

        service.swap_classifier(Classifier(second, num_threads=1))
        service.record_event({"event": "installed", "version": "0.0.2"})
        text = scrape(server.port)
        [info] = [s for s in samples(text) if s.name == "repedge_model_info"]
        assert info.labels == second.identity()
        assert value(text, "repedge_provisioning_events_total", event="installed") == 1
        assert value(text, "repedge_provisioning_last_event_timestamp_seconds") > 0
    finally:
        service.stop()
        server.close()
