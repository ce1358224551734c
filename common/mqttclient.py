"""The one way a repedge paho client is built: node, dashboard, bench, benchmarks, tests.

Like Home Assistant's ``MqttClientSetup``: :func:`new_client` sets the protocol (MQTT 5),
the client id, credentials and TLS (from the :class:`~common.endpoint.BrokerEndpoint`),
paho's own reconnect backoff, TCP_NODELAY, and a log line for every failed connection
attempt with its reason and the next retry. Without that line a node whose broker is
down, unresolvable or signed by another CA would wait silently (issue 19, issue 20).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from common.endpoint import BrokerEndpoint

log = logging.getLogger("repedge.mqtt")

MIN_RECONNECT_S = 1
MAX_RECONNECT_S = 30
# MQTT 5 DISCONNECT reason 142: another client connected with this client id.
SESSION_TAKEN_OVER = 142


def describe_connect_error(exc: BaseException | None, endpoint: BrokerEndpoint) -> str:
    """Why a connection attempt failed, in words an operator can act on."""
    where = endpoint.url
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {endpoint.host!r} ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = f"--cafile {endpoint.cafile}" if endpoint.cafile else "the system's trusted CAs"
        return (
            f"TLS: {where} presented a certificate that {ca} does not verify "
            f"({exc.verify_message or exc.reason}); is --cafile the CA that signed the broker's?"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc.reason or exc}); is it a TLS port?"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection (is the broker running on that port?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where} did not answer (timed out)"
    if isinstance(exc, OSError):
        return f"cannot reach {where} ({exc.strerror or exc})"
    return f"cannot connect to {where} ({exc!r})" if exc else f"cannot connect to {where}"


def describe_disconnect(reason: ReasonCode | int | None, client_id: str) -> str:
    """A disconnect reason; for a taken-over session, the likely cause."""
    value = getattr(reason, "value", reason)
    if value == SESSION_TAKEN_OVER:
        return (
            f"the broker handed this session to another client with the same client id "
            f"{client_id!r} (session taken over): two processes use one id, e.g. two nodes "
            "started with the same --node-id (the default is the host name)"
        )
    return f"disconnected from broker ({reason})"


class _FailedConnects:
    """paho's ``on_connect_fail``: logs the reason (the OSError paho is handling) and when
    paho tries again, and tells ``report`` (a view that shows the connection) why."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        logger: logging.Logger,
        min_s: int,
        max_s: int,
        report: Callable[[str], None] | None,
    ):
        self.endpoint, self.log, self.min_s, self.max_s = endpoint, logger, min_s, max_s
        self.report = report
        self.attempts = 0

    def __call__(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this inside its `except OSError:` block, before it waits to retry.
        exc = sys.exc_info()[1]
        self.attempts += 1
        # paho doubles its delay from min to max and resets it on CONNACK; it keeps the
        # last delay in _reconnect_delay (None: none yet). Read, never written.
        last = getattr(client, "_reconnect_delay", None)
        retry = self.min_s if last is None else min(last * 2, self.max_s)
        why = describe_connect_error(exc, self.endpoint)
        self.log.warning(
            "connection attempt %d to %s failed: %s; retrying in %g s",
            self.attempts,
            self.endpoint.url,
            why,
            retry,
        )
        if self.report is not None:
            self.report(why)


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    # Records are small: without this, Nagle's algorithm can hold one back for ~40 ms.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_client(
    endpoint: BrokerEndpoint,
    client_id: str = "",
    *,
    manual_ack: bool = False,
    logger: logging.Logger = log,
    min_reconnect_s: int = MIN_RECONNECT_S,
    max_reconnect_s: int = MAX_RECONNECT_S,
    on_failed_attempt: Callable[[str], None] | None = None,
) -> mqtt.Client:
    """A paho MQTT 5 client for ``endpoint``, ready for ``connect(*endpoint.address)``.

    Credentials and TLS come from the endpoint and nowhere else. The caller sets its own
    message callbacks; ``on_connect_fail`` and ``on_socket_open`` are set here.
    ``on_failed_attempt(reason)`` is called after each failed attempt is logged.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    endpoint.configure(client)
    client.reconnect_delay_set(min_delay=min_reconnect_s, max_delay=max_reconnect_s)
    client.on_connect_fail = _FailedConnects(
        endpoint, logger, min_reconnect_s, max_reconnect_s, on_failed_attempt
    )
    client.on_socket_open = _no_delay
    return client


def connect(client: mqtt.Client, endpoint: BrokerEndpoint, keepalive: int = 30) -> None:
    """Connect now (raises OSError with the reason); for short-lived tools and tests."""
    client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
