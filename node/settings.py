"""The node's settings: one typed object, the single source of every default.

``node start``'s options, its ``--config`` file and ``--print-config`` read their defaults
from here; node.serve receives the object whole across its exec.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from common import topics
from common.endpoint import BrokerEndpoint
from node.core import CoreConfig
from node.dedup import DEFAULT_MAX_RECORDS, DEFAULT_RETRY_S
from node.messages import DEFAULT_MAX_BYTES
from node.paths import default_state_dir
from node.teachstore import DEFAULT_TEXTS_PER_ENTITY


@dataclass
class NodeConfig:
    node_id: str = field(default_factory=socket.gethostname)
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tweets_topic: str = topics.TWEETS
    labels_topic: str = topics.LABELS
    errors_topic: str = topics.ERRORS
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
    # How often a failing record store is tried again (the node labels without it).
    store_retry_s: float = DEFAULT_RETRY_S
    # MQTT 5 shared subscription group: the broker deals tweets out among its members.
    share_group: str | None = None
    # mqtts:// (common/endpoint.py): the CA that signed the broker's certificate (None: the
    # system's CAs), and this node's certificate and key if the broker requires one.
    tls: bool = False
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    # Tweets kept per entity for teaching (node/teachstore.py); 0 keeps none.
    texts_per_entity: int = DEFAULT_TEXTS_PER_ENTITY

    def __post_init__(self) -> None:
        if not self.node_id or any(c in self.node_id for c in "/+#\x00"):
            raise ValueError(f"node id {self.node_id!r} must be non-empty, without / + #")
        if self.share_group is not None and (
            not self.share_group or any(c in self.share_group for c in "/+#\x00")
        ):
            raise ValueError(f"share group {self.share_group!r} must be non-empty, without / + #")

    @property
    def client_id(self) -> str:
        # Fixed per node: the broker keeps this session's queue while the node is away.
        return f"repedge-node-{self.node_id}"

    def endpoint(self) -> BrokerEndpoint:
        """The broker address, credentials and TLS files, ready to configure a paho client."""

        def path(value: Path | str | None) -> Path | None:
            return Path(value) if value else None

        return BrokerEndpoint(
            host=self.host,
            port=self.port,
            tls=self.tls,
            username=self.username,
            password=self.password,
            cafile=path(self.cafile),
            certfile=path(self.certfile),
            keyfile=path(self.keyfile),
        )

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
