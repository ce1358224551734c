"""Where a client finds the broker, and how it proves who it is: one parser for every client.

``BrokerEndpoint.parse("mqtts://host:8883", cafile=..., certfile=..., keyfile=...)`` checks
the combination up front (a CA file with a plain URL, a certificate without its key, a missing
file) so a client fails at start with a clear message instead of at its first connect.
:meth:`BrokerEndpoint.configure` then sets up a paho client (common/mqttclient.py builds every
client with it). The node, the dashboard, node bench and the tests use it, so ``mqtts://``
behaves the same everywhere.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
DEFAULT_PORTS = {False: 1883, True: 8883}
# A host name or address: no whitespace or control characters, which could end a line of
# a generated config (mosquitto.conf's bridge address) or a log line.
_BAD_HOST_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


class EndpointError(ValueError):
    """A broker URL or credential combination that cannot work."""


def _existing(path: Path | str | None, what: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise EndpointError(f"{what} {path} does not exist or is not a file")
    return path


def check_host(host: str) -> str:
    """``host`` if it can be a host name or address; :class:`EndpointError` otherwise."""
    if not host or _BAD_HOST_CHARS.search(host) or len(host) > 253:
        raise EndpointError(
            f"invalid broker host {host!r}: 1-253 characters, no spaces or control characters"
        )
    return host


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise EndpointError(f"invalid broker port {port!r}: an integer from 1 to 65535")
    return port


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    # CA that signed the broker's certificate (`broker certs` makes ca.crt); None with TLS:
    # the system's trusted CAs.
    cafile: Path | None = None
    # Client certificate and key, for a broker started with --require-client-cert.
    certfile: Path | None = None
    keyfile: Path | None = None

    def __post_init__(self) -> None:
        check_host(self.host)
        check_port(self.port)

    @classmethod
    def parse(
        cls,
        url: str,
        username: str | None = None,
        password: str | None = None,
        cafile: Path | str | None = None,
        certfile: Path | str | None = None,
        keyfile: Path | str | None = None,
    ) -> BrokerEndpoint:
        """``mqtt://host:port``, ``mqtts://host:port``, ``host:port`` or ``host``.

        Credentials in the URL (``mqtt://user:pw@host``) are used unless given explicitly.
        """
        if _BAD_HOST_CHARS.search(url):
            raise EndpointError(f"invalid broker URL {url!r}: no spaces or control characters")
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        scheme = parts.scheme.lower()
        if scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
            raise EndpointError(
                f"unsupported broker URL scheme {parts.scheme}:// (use mqtt:// or mqtts://)"
            )
        tls = scheme in TLS_SCHEMES
        try:
            port = parts.port
        except ValueError as exc:
            raise EndpointError(f"bad port in {url!r}: {exc}") from None
        if port is None:
            port = DEFAULT_PORTS[tls]
        check_port(port)
        if not tls and (cafile or certfile or keyfile):
            raise EndpointError(
                f"a CA file or client certificate was given but {url} is not TLS; "
                "use mqtts://HOST:PORT"
            )
        if bool(certfile) != bool(keyfile):
            raise EndpointError("a client certificate needs both --certfile and --keyfile")
        if parts.username is not None and username is None:
            username = unquote(parts.username)
        if parts.password is not None and password is None:
            password = unquote(parts.password)
        if password is not None and not username:
            raise EndpointError("a broker password needs a user name")
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            tls=tls,
            username=username or None,
            password=password,
            cafile=_existing(cafile, "CA file"),
            certfile=_existing(certfile, "certificate file"),
            keyfile=_existing(keyfile, "key file"),
        )

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log and to show)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), as paho's ``connect`` takes them."""
        return self.host, self.port

    def __str__(self) -> str:
        return self.url

    def configure(self, client: mqtt.Client) -> tuple[str, int]:
        """Set credentials and TLS on ``client``; return (host, port) for ``connect``."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(
                ca_certs=str(self.cafile) if self.cafile else None,
                certfile=str(self.certfile) if self.certfile else None,
                keyfile=str(self.keyfile) if self.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,  # and the host name must match the certificate
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return self.host, self.port
