"""The client side of the teach protocol (node/teach.py): one MQTT connection, requests to any
node, each answered on this client's own response topic.

Used by `dashboard serve` (the Teach view), `dashboard teach` (the terminal) and
`node adapt` / `node rollback`. Needs a broker user with the ``teach`` role (or admin).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.endpoint import BrokerEndpoint
from common.mqttclient import new_client
from node.teach import request_topic

CONNECT_TIMEOUT_S = 10.0
# Adapting runs the labelled tweets through the model and cross-validates: give it time.
REQUEST_TIMEOUT_S = 60.0


class TeachClientError(RuntimeError):
    """No connection, no answer in time, or the node refused the request."""


class TeachNotAllowed(TeachClientError):
    """The broker refused the request itself: this user's role may not teach."""

    def __init__(self) -> None:
        super().__init__(
            "the broker refused the request: this broker user may not teach or read tweet "
            "texts (it needs the teach or admin role: `broker users add NAME --role teach`)"
        )


class TeachClient:
    def __init__(self, endpoint: BrokerEndpoint, client_id: str | None = None) -> None:
        self.reply_to = uuid.uuid4().hex[:16]
        self._pending: dict[str, dict[str, Any] | None] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._denied: set[int] = set()  # message ids the broker's ACL refused (PUBACK 0x87)
        self.client = new_client(
            endpoint, client_id or f"repedge-teach-{self.reply_to}", max_reconnect_s=10
        )
        host, port = endpoint.address
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.connect_async(host, port)
        self.client.loop_start()

    def wait_ready(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        if not self._subscribed.wait(timeout):
            reason = self._refused or "no answer from the broker"
            raise TeachClientError(f"cannot connect to the broker for teaching: {reason}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            return
        topic = f"repedge/nodes/+/teach/response/{self.reply_to}"
        client.subscribe(topic, options=SubscribeOptions(qos=1))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Mosquitto answers an MQTT 5 publish its ACL denies with "not authorized": say so
        # at once instead of waiting out the timeout for an answer that cannot come.
        if reason_code.is_failure:
            with self._cond:
                self._denied.add(mid)
                self._cond.notify_all()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            response = json.loads(message.payload)
        except ValueError:
            return
        request_id = response.get("request_id") if isinstance(response, dict) else None
        with self._cond:
            if request_id in self._pending:
                self._pending[request_id] = response
                self._cond.notify_all()

    def request(
        self, node_id: str, op: str, timeout: float = REQUEST_TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        """Send one request and wait for its answer; :class:`TeachClientError` if the node
        does not answer in ``timeout`` or answers with an error."""
        self.wait_ready()
        request_id = uuid.uuid4().hex
        with self._cond:
            self._pending[request_id] = None
        payload = {"op": op, "reply_to": self.reply_to, "request_id": request_id, **fields}
        mid = self.client.publish(request_topic(node_id), json.dumps(payload), qos=1).mid
        with self._cond:
            got = self._cond.wait_for(
                lambda: self._pending[request_id] is not None or mid in self._denied, timeout
            )
            response = self._pending.pop(request_id)
            if mid in self._denied:
                self._denied.discard(mid)
                raise TeachNotAllowed()
        if not got or response is None:
            raise TeachClientError(
                f"node {node_id!r} did not answer {op!r} in {timeout:g} s (is it running, and "
                "may this broker user teach? `broker users add NAME --role teach`)"
            )
        if not response.get("ok"):
            raise TeachClientError(f"node {node_id!r}: {response.get('error', 'refused')}")
        return response

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
