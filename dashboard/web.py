"""`dashboard serve`: the page, its vendored assets, and live updates by Server-Sent Events.

Standard library only (ThreadingHTTPServer): the dashboard is a handful of files and one
event stream per open browser, which needs no framework. Updates are batched: a hub
thread takes one delta from the state every ``push_interval`` seconds, serialises it
once and queues it to every open stream, so 1,000 labels/s become a few small messages a
second. A new stream first gets a full snapshot (the history so far), atomically with
the delta the others get, so it misses nothing and double-counts nothing.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from dashboard.state import DashboardState

log = logging.getLogger("repedge.dashboard")

# A stream further behind than this many messages is closed; EventSource reconnects
# and starts again from a snapshot instead of replaying a backlog.
MAX_BACKLOG = 64
HEARTBEAT_S = 15.0
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# Only the dashboard's own files may run or style the page (defence in depth on top of
# the page never putting MQTT data into markup).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def sse(event: str, data: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines inside strings, so the payload is one `data:` line.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Stream:
    def __init__(self) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue(MAX_BACKLOG)
        self.dropped = threading.Event()


class Hub:
    """Fans batched deltas out to every open event stream."""

    def __init__(self, state: DashboardState, push_interval: float = 0.5) -> None:
        self.state = state
        self.push_interval = push_interval
        self.pushes = 0  # deltas sent (to any number of streams)
        self._streams: set[_Stream] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-hub", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for stream in self._streams:
                stream.dropped.set()

    def open(self) -> tuple[bytes, _Stream]:
        stream = _Stream()
        with self._lock:
            snapshot, delta = self.state.snapshot_and_delta()
            if delta is not None:
                self._send(delta)
            self._streams.add(stream)
        return sse("snapshot", snapshot), stream

    def close(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def _run(self) -> None:
        while not self._stop.wait(self.push_interval):
            with self._lock:
                delta = self.state.take_delta()
                if delta is not None:
                    self._send(delta)

    def _send(self, delta: dict[str, Any]) -> None:
        data = sse("delta", delta)
        self.pushes += 1
        for stream in list(self._streams):
            try:
                stream.queue.put_nowait(data)
            except queue.Full:
                self._streams.discard(stream)
                stream.dropped.set()


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file the page may load, read once: URL path -> (body, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    root = resources.files("dashboard") / "static"

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in _TYPES:
                files[f"/static/{prefix}{entry.name}"] = (entry.read_bytes(), _TYPES[suffix])

    walk(root, "")
    files["/"] = files["/static/index.html"]
    return files


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True  # open event streams must not keep the process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: DashboardState, hub: Hub) -> None:
        self.state = state
        self.hub = hub
        self.files = _static_files()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per asset
        log.debug("%s %s", self.address_string(), format % args)

    def _headers(self, status: HTTPStatus, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _body(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self._headers(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/events":
            self._events()
        elif path == "/api/state":
            body = json.dumps(self.server.state.snapshot(), separators=(",", ":")).encode()
            self._body(HTTPStatus.OK, "application/json", body)
        elif path == "/healthz":
            self._body(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
        elif path in self.server.files:
            body, content_type = self.server.files[path]
            self._body(HTTPStatus.OK, content_type, body)
        else:
            self._body(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _events(self) -> None:
        self.close_connection = True
        self._headers(HTTPStatus.OK, "text/event-stream", None)
        if self.command == "HEAD":
            return
        hub = self.server.hub
        first, stream = hub.open()
        try:
            self.wfile.write(b"retry: 2000\n\n" + first)
            self.wfile.flush()
            quiet = 0.0
            while not stream.dropped.is_set():
                try:
                    data = stream.queue.get(timeout=1.0)
                except queue.Empty:
                    quiet += 1.0
                    if quiet < HEARTBEAT_S:
                        continue
                    data = b": keep-alive\n\n"  # lets proxies and the browser see a live link
                quiet = 0.0
                self.wfile.write(data)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        finally:
            hub.close(stream)
