"""Prometheus metrics: the registry, the /metrics endpoint of a real node, the Grafana JSON."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import NodeMetrics

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
    identity = {"name": "m", "version": "1.0.0", "variant": "int8", "sha256": "ab" * 32}
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
