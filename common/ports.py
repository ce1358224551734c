"""Local TCP ports: pick a free one, wait until a freshly started server listens on one."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; another process may still
    take it before the caller binds, which a local test or benchmark can live with)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(
    host: str, port: int, timeout: float, process: subprocess.Popen | None = None
) -> None:
    """Return once a TCP connection to ``host:port`` succeeds; raise TimeoutError after
    ``timeout`` seconds, or RuntimeError at once if ``process`` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {host}:{port} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g} s")
