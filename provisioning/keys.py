"""Ed25519 signing keys: the only algorithm this code signs or verifies with.

The private key stays on the trainer (packaging) host; nodes hold public keys in their
configuration. Nothing here reads a key or an algorithm name from an artifact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# cryptography is imported where a key is made, read or checked: its native library costs
# a node ~6 MiB of RSS, and a node installing only its own adaptations (node adapt, local
# slots) never needs it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PASSPHRASE_ENV = "REPEDGE_KEY_PASSPHRASE"
SIGNATURE_BYTES = 64


class KeyFileError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key."""


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    key: Ed25519PublicKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: sha256 of its 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Write a new key pair; the private file is created 0600 and never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if private_path.exists() or public_path.exists():
        raise KeyFileError(
            f"refusing to overwrite {private_path if private_path.exists() else public_path}; "
            "move the old key away first"
        )
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    # O_EXCL + mode at creation: the secret is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{path} is not a usable PEM private key ({exc}); "
            f"an encrypted key needs its passphrase in ${PASSPHRASE_ENV}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}, repedge signs only with Ed25519")
    return key


def load_public_key(path: Path) -> TrustedKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}; nodes trust only Ed25519 keys")
    return TrustedKey(path=path, key=key)


def load_trusted_keys(paths: Iterable[Path]) -> list[TrustedKey]:
    keys = [load_public_key(Path(p)) for p in paths]
    if not keys:
        raise KeyFileError("no trusted public key configured: a node would accept nothing")
    return keys


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def find_signer(keys: Iterable[TrustedKey], data: bytes, signature: bytes) -> TrustedKey | None:
    """The configured key whose Ed25519 signature over ``data`` this is, if any."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIGNATURE_BYTES:
        return None
    for trusted in keys:
        try:
            trusted.key.verify(signature, data)
        except InvalidSignature:
            continue
        return trusted
    return None
