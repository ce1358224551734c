"""The dashboard's MQTT side: one read-only subscriber that feeds a DashboardState."""

from __future__ import annotations

import logging
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from common import topics as wire
from common.endpoint import BrokerEndpoint
from common.mqttclient import describe_disconnect, new_client
from dashboard.state import DashboardState

log = logging.getLogger("repedge.dashboard")

# Labels, errors, the nodes' own topics and the alerts' retained states; not
# repedge/tweets, which would double the traffic the dashboard reads at full load for
# nothing it shows. `--topic 'repedge/#'`
# widens it (the state ignores, and counts, topics it does not show).
DEFAULT_TOPICS = (
    wire.LABELS,
    wire.ERRORS,
    wire.NODE_REPORTS,
    f"{wire.ALERTS}/+",
    wire.HA_STATUS,  # Home Assistant's birth message: re-send the alerts' discovery
)


class Subscriber:
    """Subscribes (QoS 1, so counts are exact) and hands every message to the state.

    Reconnects on its own; ``connected`` tells the views whether the data is live.
    """

    def __init__(
        self,
        state: DashboardState,
        broker: BrokerEndpoint,
        topics: tuple[str, ...] | list[str] = DEFAULT_TOPICS,
        session: str | None = None,
        session_expiry_s: int = 0,
    ) -> None:
        """``session``: a fixed client id whose MQTT session outlives the process by
        ``session_expiry_s``, so the broker queues what is published while it is down
        (`dashboard collect`); None: a fresh, clean session each time (the live views)."""
        self.state = state
        self.broker = broker
        self.topics = list(topics)
        self.session_expiry_s = session_expiry_s if session else 0
        self.connected = threading.Event()
        self.last_error: str | None = None
        # Credentials, TLS, reconnect and failed-connect logging, as the node's client.
        self.client_id = session or f"repedge-dashboard-{uuid.uuid4().hex[:8]}"
        self.client = new_client(
            broker,
            self.client_id,
            logger=log,
            max_reconnect_s=15,
            on_failed_attempt=self._on_failed_attempt,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        if self.session_expiry_s:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry_s
            self.client.connect_async(
                *self.broker.address, keepalive=30, clean_start=False, properties=properties
            )
        else:
            self.client.connect_async(*self.broker.address, keepalive=30)
        self.state.set_broker(str(self.broker), False, "connecting")
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.warning(self.last_error)
            self.state.set_broker(str(self.broker), False, self.last_error)
            return
        self.last_error = None
        self.state.set_broker(str(self.broker), True)
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        self.connected.set()
        log.info("subscribed to %s on %s", ", ".join(self.topics), self.broker)

    def _on_failed_attempt(self, why: str) -> None:
        # The page and `top` show why there is no data, not an endless "connecting".
        self.last_error = why
        self.state.set_broker(str(self.broker), False, why)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.last_error = describe_disconnect(reason_code, self.client_id)
        self.state.set_broker(str(self.broker), False, self.last_error)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            self.state.ingest(message.topic, message.payload, bool(message.retain))
        except Exception:  # the view must outlive any message; ingest should never raise
            log.exception("message on %s could not be shown", message.topic)
