"""A small private CA for the broker: `broker certs --out DIR`.

DIR holds ``ca.crt``/``ca.key``, ``server.crt``/``server.key`` and ``NAME.crt``/``NAME.key``
per client. Keys are ECDSA P-256 and written 0600. Running it again reuses the CA and keeps
certificates that exist, so clients can be added later; ``force`` re-issues the server and the
named client certificates (never the CA: that would invalidate every client).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
_RESERVED = {"ca", "server"}
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CA_DAYS = 3650
# 825 days: the longest validity Apple platforms accept for a TLS server certificate.
LEAF_DAYS = 825


_Signer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
# A CA signs certificates (and revocation lists), nothing else.
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertError(ValueError):
    """Bad input for a certificate (a client name, a SAN) or an unusable CA folder."""


@dataclass
class CertsReport:
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # Mosquitto and unattended nodes cannot type a passphrase
    )
    path.unlink(missing_ok=True)
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "repedge"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san_entry(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9*_]([A-Za-z0-9.*_-]{0,252})", value):
        raise CertError(f"invalid --san {value!r}: give a host name or an IP address")
    return x509.DNSName(value)


def server_sans(extra: Iterable[str] = ()) -> list[str]:
    """localhost, the loopback addresses, this host's name, then ``extra``; no duplicates."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]
    return list(dict.fromkeys(n for n in names if n))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_or_make_ca(out: Path, report: CertsReport) -> _Signer:
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{key_path} is not an EC key made by `broker certs`")
        report.kept += [cert_path, key_path]
        return cert, key
    if cert_path.exists() or key_path.exists():
        raise CertError(f"{out} has only one of {CA_CERT} and {CA_KEY}; remove it or restore both")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"repedge CA {socket.gethostname()}")
    start = _now() - dt.timedelta(minutes=5)  # tolerate small clock skew between devices
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private_key(key_path, key)
    _write_cert(cert_path, cert)
    report.created += [cert_path, key_path]
    return cert, key


def _issue(
    ca: _Signer,
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: list[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san_entry(s) for s in sans]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certs(
    out: Path, sans: Iterable[str] = (), clients: Iterable[str] = (), force: bool = False
) -> CertsReport:
    """Create (or complete) the CA folder ``out``; see the module docstring."""
    clients = list(clients)
    for name in clients:
        if not _CLIENT_NAME.fullmatch(name) or name in _RESERVED:
            raise CertError(
                f"invalid --client {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                "not 'ca' or 'server'"
            )
    server_names = server_sans(sans)
    for name in server_names:
        _san_entry(name)  # validate all before writing anything
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    report = CertsReport()
    ca = _load_or_make_ca(out, report)
    leaves = [("server", SERVER_CERT, SERVER_KEY, ExtendedKeyUsageOID.SERVER_AUTH, server_names)]
    leaves += [
        (name, f"{name}.crt", f"{name}.key", ExtendedKeyUsageOID.CLIENT_AUTH, [])
        for name in clients
    ]
    for common_name, cert_name, key_name, usage, alt_names in leaves:
        cert_path, key_path = out / cert_name, out / key_name
        if cert_path.exists() and key_path.exists() and not force:
            report.kept += [cert_path, key_path]
            continue
        cert, key = _issue(ca, common_name, usage, alt_names)
        _write_private_key(key_path, key)
        _write_cert(cert_path, cert)
        report.created += [cert_path, key_path]
    return report


def check_tls_dir(tls_dir: Path) -> None:
    """What `broker start --tls DIR` needs is there (Mosquitto's own error is cryptic)."""
    missing = [n for n in (CA_CERT, SERVER_CERT, SERVER_KEY) if not (tls_dir / n).is_file()]
    if missing:
        raise CertError(
            f"{tls_dir} lacks {', '.join(missing)}; create them with `broker certs --out {tls_dir}`"
        )
