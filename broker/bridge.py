"""Mosquitto's own bridge, configured to forward a site's results to a central broker.

A site runs its own broker (nodes keep working when the uplink is down); the bridge is a
client of the central broker that Mosquitto runs for us. We only render its configuration
(``connection`` block of mosquitto.conf): Mosquitto queues what the centre has not
acknowledged, in its persistence file, and resends it after an outage.

Topics at the centre carry the site's name in front (``sites/NAME/repedge/labels``), so one
``sites/+/repedge/labels`` subscription there watches the whole fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common import topics
from common.settings import SettingsError, check_topic_name

# What a site sends to the centre: results and node telemetry/status (retained statuses
# keep their retain flag, so the centre knows the last state of every node).
OUT_TOPICS = (topics.LABELS, topics.ERRORS, topics.ALL_NODES)
TWEETS_TOPIC = topics.TWEETS
# --bridge-tweets-in: where a site's tweets come from at the centre.
#   site:   the centre addresses this site: it publishes to sites/NAME/repedge/tweets.
#   shared: one central feed on repedge/tweets, spread over all sites (each tweet goes to
#           one site) by an MQTT 5 shared subscription the bridge makes at the centre.
TWEETS_IN_MODES = ("off", "site", "shared")
# MQTT 5 unless the centre only speaks 3.1.1 (RabbitMQ before 3.13, for one): Mosquitto 2.0's
# MQTT 5 bridge does not fall back by itself, it retries MQTT 5 forever.
PROTOCOLS = ("mqttv50", "mqttv311")
SHARED_GROUP = "repedge-sites"
# Debian's bundle of the system's trusted CAs, for mqtts:// without --bridge-cafile.
SYSTEM_CA_PATH = "/etc/ssl/certs"

_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BridgeError(ValueError):
    """A bridge option that Mosquitto would refuse or misread."""


@dataclass(frozen=True)
class BridgeConfig:
    """``--bridge-to URL --site NAME ...`` of `broker start`."""

    url: str
    site: str
    username: str | None = None
    password: str | None = None
    cafile: Path | None = None
    tweets_in: str = "off"
    protocol: str = "mqttv50"
    # The nodes' tweets topic, taken from the centre with --bridge-tweets-in.
    tweets_topic: str = TWEETS_TOPIC

    @property
    def wire_protocol(self) -> str:
        """The protocol the bridge speaks. A shared central feed needs MQTT 3.1.1: an MQTT 5
        bridge of Mosquitto subscribes with No Local, which MQTT 5 forbids on a shared
        subscription (a protocol error that Mosquitto 2.0.21 enforces by disconnecting
        the bridge), while a 3.1.1 subscription has no such flag."""
        return "mqttv311" if self.tweets_in == "shared" else self.protocol

    def __post_init__(self) -> None:
        try:
            check_topic_name("--tweets-topic", self.tweets_topic)
        except SettingsError as exc:
            raise BridgeError(str(exc)) from None
        if not _SITE_RE.match(self.site):
            raise BridgeError(
                f"site name {self.site!r}: use letters, digits, '.', '_' or '-' (at most 64), "
                "it becomes part of topics and client ids"
            )
        if self.protocol not in PROTOCOLS:
            raise BridgeError(
                f"bridge protocol {self.protocol!r}: choose one of {', '.join(PROTOCOLS)}"
            )
        if self.tweets_in not in TWEETS_IN_MODES:
            raise BridgeError(
                f"bridge tweets-in {self.tweets_in!r}: choose one of {', '.join(TWEETS_IN_MODES)}"
            )
        for name, value in (("user", self.username), ("password", self.password)):
            # mosquitto.conf is line based: a newline would start a new option.
            if value is not None and ("\n" in value or "\r" in value or not value.strip()):
                raise BridgeError(f"bridge {name} must be one non-empty line")
        if self.password is not None and self.username is None:
            raise BridgeError("a bridge password needs a bridge user")
        if self.cafile is not None and re.search(r"[\s\x00-\x1f\x7f]", str(self.cafile)):
            # It becomes a mosquitto.conf line: no newline may add options to the file.
            raise BridgeError(
                f"--bridge-cafile {str(self.cafile)!r}: no spaces or control characters"
            )
        parse_bridge_url(self.url)  # refuse a bad URL now, not when Mosquitto reads it

    @property
    def endpoint(self) -> tuple[bool, str, int]:
        """(tls, host, port) of the central broker."""
        return parse_bridge_url(self.url)

    @property
    def prefix(self) -> str:
        """What the centre puts in front of this site's topics."""
        return f"sites/{self.site}/"

    @property
    def client_id(self) -> str:
        # Fixed per site: the centre keeps the bridge's session (and queue) across outages.
        return f"repedge-bridge-{self.site}"


def parse_bridge_url(url: str) -> tuple[bool, str, int]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` -> (tls, host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BridgeError(f"--bridge-to {url!r}: give mqtt://HOST:PORT or mqtts://HOST:PORT")
    if parts.username or parts.password:
        raise BridgeError("--bridge-to: give the user with --bridge-user, not in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BridgeError(f"--bridge-to {url!r}: only scheme, host and port are allowed")
    try:
        port = parts.port
    except ValueError as exc:
        raise BridgeError(f"--bridge-to {url!r}: {exc}") from None
    host = unquote(parts.hostname or "")
    if not host or re.search(r"[\s\x00-\x1f\x7f]", host):
        raise BridgeError(f"--bridge-to {url!r}: no host, or one with spaces or control characters")
    tls = parts.scheme == "mqtts"
    return tls, host, port or (8883 if tls else 1883)


def render_bridge(bridge: BridgeConfig) -> str:
    """The mosquitto.conf lines for ``bridge`` (append after the main configuration)."""
    tls, host, port = bridge.endpoint
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        "",
        f"# Bridge to the central broker; this site's topics appear there under {bridge.prefix}",
        "# Rendered by `broker start --bridge-to` (broker/bridge.py).",
        f"connection {bridge.client_id}",
        f"address {address}",
        f"bridge_protocol_version {bridge.wire_protocol}",
        # Persistent sessions at both ends: the centre keeps what it owes the site, and the
        # site keeps (and saves to its persistence file) what the centre has not acknowledged.
        "cleansession false",
        "local_cleansession false",
        f"remote_clientid {bridge.client_id}",
        f"local_clientid {bridge.client_id}-local",
        "start_type automatic",
        # Mosquitto marks a 3.1.1 bridge by a high bit in the protocol level, which other
        # brokers refuse as a corrupt header (RabbitMQ does); our topics cannot loop anyway.
        *(["try_private false"] if bridge.wire_protocol == "mqttv311" else []),
        "restart_timeout 5 30",
        "keepalive_interval 30",
        # The centre sees whether a site's uplink is up (1) or down (0, set by the will).
        "notifications true",
        f"notification_topic {bridge.prefix}{topics.BRIDGE_STATE}",
    ]
    if bridge.username:
        lines.append(f"remote_username {bridge.username}")
    if bridge.password:
        lines.append(f"remote_password {bridge.password}")
    if tls:
        if bridge.cafile is not None:
            lines.append(f"bridge_cafile {Path(bridge.cafile).resolve()}")
        else:
            lines.append(f"bridge_capath {SYSTEM_CA_PATH}")
    elif bridge.cafile is not None:
        raise BridgeError("--bridge-cafile needs an mqtts:// --bridge-to")
    # `topic PATTERN DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX`: the local topic is
    # LOCAL_PREFIX+PATTERN, the remote one REMOTE_PREFIX+PATTERN.
    lines += [f'topic {topic} out 1 "" {bridge.prefix}' for topic in OUT_TOPICS]
    if bridge.tweets_in == "site":
        lines.append(f'topic {bridge.tweets_topic} in 1 "" {bridge.prefix}')
    elif bridge.tweets_in == "shared":
        # The bridge subscribes to $share/GROUP/repedge/tweets at the centre. Deliveries
        # come back named repedge/tweets, which does not match the $share pattern, so
        # Mosquitto passes them to the local repedge/tweets unchanged.
        lines.append(f'topic {bridge.tweets_topic} in 1 "" {topics.shared(SHARED_GROUP, "")}')
    return "\n".join(lines) + "\n"
