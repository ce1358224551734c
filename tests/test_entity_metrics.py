"""Per-entity Prometheus series on a node, with bounded cardinality (issue 17)."""

from __future__ import annotations

import json
import uuid

from test_metrics_endpoint import samples, scrape_until, value

from harness import Collector, free_port, publish
from node.metrics import OTHER_ENTITY, NodeMetrics


def test_entities_beyond_the_cap_share_one_series() -> None:
    metrics = NodeMetrics("n1", process=False, entities=["Honda"], max_entities=2)
    records = [
        {"label": "negative", "entity": "BMW", "related": True},
        {"label": "positive", "entity": "Audi", "related": False},  # over the cap
        {"label": "neutral", "entity": "Kia"},  # over the cap, no related head
        {"label": "negative", "entity": "BMW", "related": True},
        {"label": "positive"},  # no entity: not per entity
        {"label": "positive", "entity": "Honda", "related": True},  # configured: own series
    ]
    metrics.observe_entities(records)
    text = metrics.render().decode()
    series = {s.labels["entity"] for s in samples(text) if s.name == "repedge_entity_labels_total"}
    assert series == {"Honda", "BMW", OTHER_ENTITY}
    assert value(text, "repedge_entity_labels_total", entity="BMW", label="negative",
                 related="true") == 2  # fmt: skip
    assert value(text, "repedge_entity_labels_total", entity=OTHER_ENTITY) == 2
    assert value(text, "repedge_entity_labels_total", entity=OTHER_ENTITY, related="unknown") == 1
    assert value(text, "repedge_entity_labels_total", entity="Honda") == 1


def test_a_node_counts_its_entities_in_metrics(node_factory, mosquitto, topics) -> None:
    port = free_port()
    node = node_factory(extra=["--metrics-port", str(port), "--no-ha-discovery",
                               "--entity", "Honda"])  # fmt: skip
    watcher = Collector(mosquitto, [topics.labels, f"repedge/nodes/{node.node_id}/#"])
    try:
        node.start_and_wait_online(watcher)
        tag = uuid.uuid4().hex[:6]
        tweets = [json.dumps({"id": f"{tag}-{i}", "text": f"my car number {i}"}) for i in range(3)]
        tweets += [
            json.dumps({"id": f"{tag}-b{i}", "text": f"bmw {i}", "entity": "BMW"}) for i in range(2)
        ]
        publish(mosquitto, topics.tweets, tweets)
        watcher.wait_count(topics.labels, len(tweets))
        text = scrape_until(
            port,
            lambda t: value(t, "repedge_entity_labels_total") == len(tweets),
            "5 per-entity labels in /metrics",
        )
        assert value(text, "repedge_entity_labels_total", entity="Honda") == 3
        assert value(text, "repedge_entity_labels_total", entity="BMW") == 2
    finally:
        watcher.close()
