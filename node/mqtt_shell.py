"""The node's MQTT session: a thin adapter between paho and the rest of the node.

It owns the paho client and nothing else of the node's logic:

* connects as MQTT 5 client ``repedge-node-<id>`` with ``clean_start=False``, a Session
  Expiry and a Receive Maximum equal to the node's queue size, and reconnects with backoff;
* before every CONNECT (``on_pre_connect``) refreshes the Last Will (see
  :meth:`MqttShell.will_payload`) and tells the ledger that unsent QoS 0 packets are gone;
* on every CONNACK: starts a new ledger epoch, subscribes to the tweets topic (through
  ``$share/<group>/`` when the config has a ``share_group``) and to the extra
  subscriptions, publishes the retained ``online`` status and the extra connect publishes;
* routes incoming messages: tweets go to ``on_tweet(payload, delivery)``, messages of an
  extra subscription to its handler (and are acked right after it);
* publishes through the :class:`~node.ledger.AckLedger`, which acks a tweet once the
  broker has the record that answers it.

Extension points (set up by node/service.py from ``NodeHooks``):

* ``subscriptions``: ``(topic filter, qos, handler(topic, payload))``, subscribed on every
  connect; the handler runs on paho's network thread and must be quick (e.g. Home
  Assistant's ``homeassistant/status``, to republish discovery when HA restarts).
* ``connect_publishes``: callables returning ``(topic, payload, qos, retain)`` tuples,
  published on every (re)connect after the status (e.g. Home Assistant discovery).
* ``on_subscribed()``: called when the broker has acknowledged the tweets subscription
  (the SUBACK), on every connect.
* the paho client itself (credentials, TLS, reconnect backoff, a log line for every failed
  connection attempt) comes from common/mqttclient.py, as every repedge client's does;
  a session taken over by another client with the node's id is logged with its likely cause.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.mqttclient import SESSION_TAKEN_OVER, describe_disconnect, new_client
from common.topics import strip_share
from node.ledger import AckLedger
from node.settings import NodeConfig

log = logging.getLogger("repedge.node")

# MQTT 5 caps Receive Maximum at 65,535.
MAX_RECEIVE_MAXIMUM = 65_535
# A QoS 1 publish whose message id paho still holds in flight is refused; drawing another
# id a few times settles it (only after a full 65,535-id cycle with one record stuck).
_PUBLISH_TRIES = 4

Publish = tuple[str, str | bytes, int, bool]  # topic, payload, qos, retain
TweetSink = Callable[[bytes, "Delivery"], None]
Handler = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """How to acknowledge one received message: on the connection (epoch) it came on."""

    mid: int
    qos: int
    epoch: int

    @property
    def needs_ack(self) -> bool:
        return self.qos > 0


class MqttShell:
    def __init__(
        self,
        config: NodeConfig,
        *,
        on_tweet: TweetSink,
        status: Callable[[str, str | None], str],
        will: Callable[[], str],
        subscriptions: Sequence[tuple[str, int, Handler]] = (),
        connect_publishes: Sequence[Callable[[], Iterable[Publish]]] = (),
        on_subscribed: Callable[[], None] | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self._on_tweet = on_tweet
        self._status = status
        self._will = will
        self._subscriptions = subscriptions
        self._connect_publishes = connect_publishes
        self._on_subscribed = on_subscribed
        self._on_connection = on_connection
        self.receive_maximum = min(config.queue_size, MAX_RECEIVE_MAXIMUM)
        self.ledger = AckLedger(self._send_ack)
        self.connected = threading.Event()
        self.draining = threading.Event()
        self._tweets_subscription = config.tweets_subscription
        self._tweets_filter = strip_share(self._tweets_subscription)
        self._tweets_sub_mid: int | None = None
        self._left_group = threading.Event()
        self.client = self._make_client()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(
            *self.config.broker.address,  # the endpoint `node start` parsed, unchanged
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        # loop_start retries the first connection too: a broker that is not up yet is
        # waited for with backoff (reconnect_delay_set), not fatal.
        self.client.loop_start()

    def leave_share_group(self, timeout: float) -> bool:
        """Unsubscribe from the share group's tweets; True once the broker confirmed.

        Mosquitto deals a group member its turn whether it is connected or not, into its
        persistent session: a member stopped while still subscribed would strand a share
        of the new tweets until it comes back. Tweets already dealt to it stay in its
        session (and come back when a node with its id starts again).
        """
        if not self.config.share_group or not self.connected.is_set():
            return False
        rc, _mid = self.client.unsubscribe(self._tweets_subscription)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        left = self._left_group.wait(timeout)
        log.info("left share group %s: %s", self.config.share_group, left)
        return left

    def stop(self, deadline: float) -> None:
        """Say ``offline`` (reason ``shutdown``) if connected, then disconnect."""
        self.draining.set()
        if self.connected.is_set():
            info = self._publish(
                self.config.node_topic("status"), self._status("offline", "shutdown"), 1, True
            )
            if info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(max(0.5, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    # -- publishing -------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        qos: int,
        retain: bool = False,
        completes: Iterable[Delivery] = (),
    ) -> bool:
        """Publish through the ledger; the ``completes`` are acked once the broker has it.

        False if paho did not take the message (a QoS 0 message while disconnected, or a
        refusal); QoS 1 messages published while disconnected are queued by paho and sent
        on reconnect.
        """
        return self._publish(topic, payload, qos, retain, completes) is not None

    def _publish(
        self,
        topic: str,
        payload: str | bytes,
        qos: int,
        retain: bool = False,
        completes: Iterable[Delivery] = (),
    ) -> mqtt.MQTTMessageInfo | None:
        completes = list(completes)
        infos: list[mqtt.MQTTMessageInfo] = []

        def send() -> tuple[int, bool]:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            infos.append(info)
            ok = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            queued = info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0
            return info.mid, ok or queued

        for _ in range(_PUBLISH_TRIES):
            if self.ledger.publish(send, qos, completes):
                return infos[-1]
            if infos and infos[-1].rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                break
        rc = infos[-1].rc if infos else None
        if rc != MQTTErrorCode.MQTT_ERR_NO_CONN:  # (QoS 0 while disconnected: dropped)
            log.error("publish on %s failed: %s", topic, mqtt.error_string(rc) if rc else "?")
        return None

    def _send_ack(self, delivery: Delivery) -> None:
        self.client.ack(delivery.mid, delivery.qos)

    # -- paho -------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = new_client(
            self.config.endpoint(), self.config.client_id, manual_ack=True, logger=log
        )
        self._set_will(client)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _set_will(self, client: mqtt.Client) -> None:
        client.will_set(self.config.node_topic("status"), self._will(), qos=1, retain=True)

    def _on_pre_connect(self, client, userdata) -> None:
        # Runs before every CONNECT, the first included: paho has just dropped its
        # unsent QoS 0 packets, and the will carried by this CONNECT is set now.
        self.ledger.connection_reset()
        self._set_will(client)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        epoch = self.ledger.connected()
        log.info("connected (session present: %s, epoch %d)", flags.session_present, epoch)
        _, self._tweets_sub_mid = client.subscribe(
            self._tweets_subscription, options=SubscribeOptions(qos=1)
        )
        for topic, qos, _handler in self._subscriptions:
            client.subscribe(topic, options=SubscribeOptions(qos=qos))
        self.publish(self.config.node_topic("status"), self._status("online", None), 1, True)
        for make in self._connect_publishes:
            try:
                for topic, payload, qos, retain in make():
                    self.publish(topic, payload, qos, retain)
            except Exception:
                log.exception("a connect publish failed")
        self.connected.set()
        self._notify_connection(True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._tweets_sub_mid:
            return
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused the subscription to %s: %s", self._tweets_subscription,
                      failed[0])  # fmt: skip
            return
        if self._on_subscribed is not None:
            try:
                self._on_subscribed()
            except Exception:
                log.exception("on_subscribed callback failed")

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._left_group.set()  # the only unsubscribe the shell sends: leave_share_group

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code == SESSION_TAKEN_OVER:
            log.error("%s; reconnecting", describe_disconnect(reason_code, self.config.client_id))
        elif not self.draining.is_set():
            log.warning("%s; reconnecting", describe_disconnect(reason_code, self.config.client_id))
        self._notify_connection(False)

    def _notify_connection(self, up: bool) -> None:
        if self._on_connection is not None:
            try:
                self._on_connection(up)
            except Exception:
                log.exception("connection callback failed")

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        delivery = Delivery(message.mid, message.qos, self.ledger.epoch)
        if mqtt.topic_matches_sub(self._tweets_filter, message.topic):
            if not self.draining.is_set():  # while draining, tweets stay with the broker
                self._on_tweet(message.payload, delivery)
            return
        for topic, _qos, handler in self._subscriptions:
            if mqtt.topic_matches_sub(strip_share(topic), message.topic):
                try:
                    handler(message.topic, message.payload)
                except Exception:
                    log.exception("handler for %s failed", topic)
                break
        if delivery.needs_ack:
            client.ack(delivery.mid, delivery.qos)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker rejected a publish (mid %d): %s", mid, reason_code)
        self.ledger.on_publish(mid)
