"""Durable file operations: what must survive a power cut or a stick pulled too early."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class CopyError(Exception):
    """A file could not be copied as the manifest describes it."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (the file's own fsync is not enough)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_durable(path: Path, content: bytes) -> None:
    """Create ``path`` (it must not exist) with ``content``, flushed to the device."""
    with open(path, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def is_regular_file(path: Path) -> bool:
    """True for a plain file; False for symlinks, devices, FIFOs (a crafted stick may hold them)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    """True for a folder that is itself no symlink (a crafted stick may link anywhere)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def copy_durable(src: Path, dst: Path, max_bytes: int | None = None) -> tuple[str, int]:
    """Copy ``src`` to a new file ``dst``, fsync it, return (sha256, size) of the bytes written.

    Hashing the bytes as they are written (not the source afterwards) means what is checked
    is what was stored, even if the source changes under us. With ``max_bytes``, stops after
    one byte more than that, so an oversized file cannot fill the disk.
    """
    digest = hashlib.sha256()
    size = 0
    limit = None if max_bytes is None else max_bytes + 1
    if not is_regular_file(src):
        raise CopyError(f"{src} is missing or not a regular file")
    with _open_nofollow(src) as fin, open(dst, "xb") as fout:
        while True:
            want = _CHUNK if limit is None else min(_CHUNK, limit - size)
            if want <= 0:
                break
            chunk = fin.read(want)
            if not chunk:
                break
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def sha256_uncached(path: Path) -> str:
    """sha256 of a file as stored on the device, not as remembered by the page cache.

    After an fsync the kernel may drop the file's clean cached pages, so this read-back
    goes to the medium (best effort: a no-op where fadvise is unsupported).
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _open_nofollow(path: Path) -> BinaryIO:
    # A symlink swapped in after the lstat check is refused, not followed.
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a regular file: enough to tell it is too big."""
    with _open_nofollow(path) as f:
        return f.read(limit + 1)
