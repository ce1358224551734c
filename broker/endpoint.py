"""Where a client finds the broker, and how it proves who it is: one parser for every client.

``BrokerEndpoint.parse("mqtts://host:8883", cafile=..., certfile=..., keyfile=...)`` checks
the combination up front (a CA file with a plain URL, a certificate without its key, a missing
file) so a client fails at start with a clear message instead of at its first connect.
:meth:`BrokerEndpoint.configure` then sets up a paho client. The node, the dashboard and any
other client use it, so ``mqtts://`` behaves the same everywhere.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
DEFAULT_PORTS = {False: 1883, True: 8883}


class EndpointError(ValueError):
    """A broker URL or credential combination that cannot work."""


def _existing(path: Path | str | None, what: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise EndpointError(f"{what} {path} does not exist or is not a file")
    return path


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
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        scheme = parts.scheme.lower()
        if scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
            raise EndpointError(
                f"unsupported broker URL scheme {parts.scheme}:// (use mqtt:// or mqtts://)"
            )
        tls = scheme in TLS_SCHEMES
        try:
            port = parts.port or DEFAULT_PORTS[tls]
        except ValueError as exc:
            raise EndpointError(f"bad port in {url!r}: {exc}") from None
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
