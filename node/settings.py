"""The node's settings: one typed object, the single source of every default.

``node start``'s options, its ``--config`` file and ``--print-config`` read their defaults
from here; node.serve receives the object whole across its exec.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from common import topics
from common.endpoint import BrokerEndpoint
from common.settings import LOG_LEVELS, MAX_UINT32, SettingsError, setting, validate
from edgemodel.defaults import MAX_BATCH, MAX_BATCH_TOKENS
from node.core import CoreConfig
from node.dedup import DEFAULT_MAX_RECORDS, DEFAULT_RETRY_S
from node.messages import DEFAULT_MAX_BYTES
from node.paths import default_state_dir
from node.teachstore import DEFAULT_TEXTS_PER_ENTITY

# Where a node connects when nothing says otherwise.
DEFAULT_BROKER = BrokerEndpoint("localhost", 1883)
# The node id is the MQTT client id's tail, a topic level and (with --auth) a broker user
# name: keep it short and free of MQTT wildcards, separators and control characters.
MAX_NODE_ID = 64
_NODE_ID_FORBIDDEN = re.compile(r"[/+#\s\x00-\x1f\x7f]")


@dataclass
class NodeConfig:
    """One node's settings. Ranges are checked when it is built (``__post_init__``)."""

    node_id: str = setting(default_factory=socket.gethostname, max_len=MAX_NODE_ID)
    # Address, credentials and TLS files in one typed value (common/endpoint.py).
    broker: BrokerEndpoint = setting(DEFAULT_BROKER)
    tweets_topic: str = setting(topics.TWEETS, max_len=1024)
    labels_topic: str = setting(topics.LABELS, max_len=1024)
    errors_topic: str = setting(topics.ERRORS, max_len=1024)
    # A floor: every report is a publish and a JSON document; 0 would be a busy loop.
    telemetry_interval_s: float = setting(5.0, option="telemetry-interval", min=0.5, max=86_400.0)
    max_batch: int = setting(MAX_BATCH, min=1, max=4096)
    # Rows x padded length per interpreter call; see batcher.bucket_by_length.
    max_batch_tokens: int = setting(MAX_BATCH_TOKENS, min=1, max=1_048_576)
    max_wait_ms: float = setting(5.0, min=0.0, max=60_000.0)
    # Also the MQTT Receive Maximum (capped at 65,535 there).
    queue_size: int = setting(256, min=1, max=1_000_000)
    max_bytes: int = setting(DEFAULT_MAX_BYTES, min=1, max=256 * 1024 * 1024)
    state_dir: Path | None = None
    session_expiry_s: int = setting(7 * 24 * 3600, option="session-expiry", min=0, max=MAX_UINT32)
    keepalive_s: int = setting(30, min=5, max=65_535)
    dedup_max_records: int = setting(DEFAULT_MAX_RECORDS, min=1)
    drain_timeout_s: float = setting(10.0, option="drain-timeout", min=0.0, max=3600.0)
    # The brand a node monitors: the entity of tweets that arrive without one.
    default_entity: str | None = setting(None, option="entity", max_len=200)
    # How often a failing record store is tried again (the node labels without it).
    store_retry_s: float = setting(DEFAULT_RETRY_S, min=0.0, min_exclusive=True)
    # MQTT 5 shared subscription group: the broker deals tweets out among its members.
    share_group: str | None = setting(None, max_len=MAX_NODE_ID)
    # Tweets kept per entity for teaching (node/teachstore.py); 0 keeps none.
    texts_per_entity: int = setting(DEFAULT_TEXTS_PER_ENTITY, min=0)

    def __post_init__(self) -> None:
        validate(self)
        if not self.node_id or _NODE_ID_FORBIDDEN.search(self.node_id):
            raise SettingsError(
                f"--node-id: {self.node_id!r} must be 1-{MAX_NODE_ID} characters without "
                "spaces, control characters, / + or #"
            )
        if self.share_group is not None and (
            not self.share_group or _NODE_ID_FORBIDDEN.search(self.share_group)
        ):
            raise SettingsError(
                f"--share-group: {self.share_group!r} must be non-empty, without spaces, / + #"
            )
        for name in ("labels_topic", "errors_topic"):
            topic = getattr(self, name)
            if not topic or "+" in topic or "#" in topic or topic.startswith("$"):
                raise SettingsError(
                    f"--{name.replace('_', '-')}: {topic!r} must be a topic name "
                    "(no wildcards + #, not $...)"
                )
        if not self.tweets_topic or self.tweets_topic.startswith("$share/"):
            raise SettingsError(
                f"--tweets-topic: {self.tweets_topic!r} must be a topic filter "
                "(use --share-group for $share/)"
            )

    @property
    def client_id(self) -> str:
        # Fixed per node: the broker keeps this session's queue while the node is away.
        return f"repedge-node-{self.node_id}"

    def endpoint(self) -> BrokerEndpoint:
        """The broker address, credentials and TLS files, ready to configure a paho client."""
        return self.broker

    @property
    def tweets_subscription(self) -> str:
        """The topic filter the node subscribes to for tweets."""
        group = self.share_group
        return topics.shared(group, self.tweets_topic) if group else self.tweets_topic

    def node_topic(self, leaf: str) -> str:
        return topics.node_topic(self.node_id, leaf)

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or default_state_dir(self.node_id)

    @property
    def store_path(self) -> Path:
        return self.resolved_state_dir / "records.sqlite"

    def core_config(self) -> CoreConfig:
        return CoreConfig(
            node_id=self.node_id,
            labels_topic=self.labels_topic,
            errors_topic=self.errors_topic,
            max_bytes=self.max_bytes,
            default_entity=self.default_entity,
            max_batch_tokens=self.max_batch_tokens,
        )


@dataclass
class NodeStart:
    """Everything ``node start`` hands to node.serve: built and checked once, in the CLI,
    and sent across the exec whole (common/settings.py ``to_json`` / ``from_json``)."""

    config: NodeConfig = setting(default_factory=NodeConfig)
    # None: the model installed into provision_state, else the shipped default; node.serve
    # resolves it, once.
    model: Path | None = None
    variant: str | None = setting(None, max_len=64)
    # None: edgemodel/defaults.py serving_threads().
    threads: int | None = setting(None, min=1, max=256)
    watch_mount: Path | None = None
    trust_keys: list[Path] = setting(default_factory=list, option="trust-key")
    provision_state: Path | None = None
    metrics_port: int | None = setting(None, min=1, max=65_535)
    metrics_host: str = setting("127.0.0.1", max_len=253)
    ha_discovery: bool = setting(True, option="ha-discovery")
    log_level: str = setting("info", choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        validate(self)
        if not self.metrics_host or any(c.isspace() for c in self.metrics_host):
            raise SettingsError(f"--metrics-host: {self.metrics_host!r} is not a host address")
