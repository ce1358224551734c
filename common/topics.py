"""The MQTT topic namespace: every ``repedge/...`` topic, named once.

Home Assistant's MQTT integration names each of its topics once (``const.py``); this is
that module for repedge. The node, the broker's ACLs and bridge, the dashboard, the
benchmarks and the tests build their topics from here, so a renamed topic cannot leave
one of them behind.
"""

from __future__ import annotations

NAMESPACE = "repedge"

TWEETS = f"{NAMESPACE}/tweets"
LABELS = f"{NAMESPACE}/labels"
ERRORS = f"{NAMESPACE}/errors"
NODES = f"{NAMESPACE}/nodes"
# Every node's reports (status, telemetry, events), and everything under the nodes.
NODE_REPORTS = f"{NODES}/+/+"
ALL_NODES = f"{NODES}/#"
EVERYTHING = f"{NAMESPACE}/#"
# Spike alerts per entity (dashboard/alert_monitor.py): retained state on ALERTS/<entity>,
# events on ALERTS/<entity>/events.
ALERTS = f"{NAMESPACE}/alerts"
# A site broker's bridge reports its link state here (broker/bridge.py).
BRIDGE_STATE = f"{NAMESPACE}/bridge/state"

# Leaves under repedge/nodes/<id>/.
STATUS = "status"
TELEMETRY = "telemetry"
EVENTS = "events"

HA_DISCOVERY_PREFIX = "homeassistant"
# Home Assistant's birth message ("online" when it (re)starts).
HA_STATUS = f"{HA_DISCOVERY_PREFIX}/status"

SHARE_PREFIX = "$share/"
SITES = "sites"


def node_topic(node_id: str, leaf: str) -> str:
    """``repedge/nodes/<node id>/<leaf>`` (leaf: status, telemetry, events)."""
    return f"{NODES}/{node_id}/{leaf}"


def node_subtree(node_id: str) -> str:
    """Every topic of one node: ``repedge/nodes/<node id>/#``."""
    return f"{NODES}/{node_id}/#"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: the broker deals each message to one group member."""
    return f"{SHARE_PREFIX}{group}/{topic_filter}"


def any_share(topic_filter: str) -> str:
    """``$share/+/<filter>``: the filter through any share group (ACL pattern)."""
    return f"{SHARE_PREFIX}+/{topic_filter}"


def strip_share(topic_filter: str) -> str:
    """``$share/G/a/b`` -> ``a/b``: the filter messages actually arrive under."""
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


def site_prefix(site: str) -> str:
    """A site's topics at a central broker carry ``sites/<site>/`` in front."""
    return f"{SITES}/{site}/"
