"""Live updates for the web page: batched deltas over Server-Sent Events (``/events``).

A hub thread takes one delta from the state every ``push_interval`` seconds, encodes it
once and queues the same bytes to every open stream, so 1,000 labels/s become a few
small messages a second and 600 browsers cost 600 references, not 600 copies. Browsers
that connect between two pushes wait for the next one and share one encoded snapshot,
taken atomically with the delta the others get: nobody misses or double-counts a label.
A stream that falls ``MAX_BACKLOG`` messages behind is closed (common/httpserver.py);
EventSource reconnects and starts again from a snapshot instead of replaying a backlog.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from common.httpserver import EventStream, HttpServer, Request
from common.text import inert_json
from dashboard.state import DashboardState

MAX_BACKLOG = 64
# Sent first on every stream: EventSource waits this long (ms) before reconnecting.
_RETRY = b"retry: 2000\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One event; strings are made inert, and json.dumps escapes newlines, so the
    payload is one ``data:`` line."""
    body = json.dumps(inert_json(data), separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


class Hub:
    """Fans batched deltas out to every open event stream of one :class:`HttpServer`."""

    def __init__(
        self, state: DashboardState, push_interval: float = 0.5, backlog: int = MAX_BACKLOG
    ) -> None:
        self.state = state
        self.push_interval = push_interval
        self.backlog = backlog
        self.pushes = 0  # deltas sent (to any number of streams)
        self.snapshots = 0  # snapshots encoded (each shared by the streams that joined)
        self.server: HttpServer | None = None
        self._streams: set[EventStream] = set()
        self._joining: list[EventStream] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-hub", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        with self._lock:
            streams = [*self._streams, *self._joining]
        if self.server is not None:
            for stream in streams:
                self.server.call_soon(stream.close)

    def streams(self) -> int:
        with self._lock:
            return len(self._streams) + len(self._joining)

    def open(self, request: Request) -> EventStream:
        """The ``/events`` handler (runs on the server's loop): a stream that gets the
        next push's shared snapshot, then every delta."""
        stream = EventStream(_RETRY, self.backlog, on_close=self._closed)
        with self._lock:
            self._joining.append(stream)
        return stream

    def _closed(self, stream: EventStream) -> None:
        with self._lock:
            self._streams.discard(stream)
            if stream in self._joining:
                self._joining.remove(stream)

    def _run(self) -> None:
        while not self._stop.wait(self.push_interval):
            self.push()

    def push(self) -> None:
        """One round: the pending delta to the open streams, a snapshot to new ones."""
        with self._lock:
            joining, self._joining = self._joining, []
            if joining:
                snapshot, delta = self.state.snapshot_and_delta()
            else:
                snapshot, delta = None, self.state.take_delta()
            streams = list(self._streams)
            self._streams.update(joining)
        if delta is None and snapshot is None:
            return
        delta_bytes = sse("delta", delta) if delta is not None else None
        snapshot_bytes = sse("snapshot", snapshot) if snapshot is not None else None
        self.pushes += delta is not None
        self.snapshots += snapshot is not None
        if self.server is None or not self.server.call_soon(
            _fan_out, streams, delta_bytes, joining, snapshot_bytes
        ):
            for stream in [*streams, *joining]:
                self._closed(stream)


def _fan_out(
    streams: list[EventStream],
    delta: bytes | None,
    joining: list[EventStream],
    snapshot: bytes | None,
) -> None:
    """On the server's loop: the same bytes objects go to every stream (no copies)."""
    if delta is not None:
        for stream in streams:
            stream.put(delta)
    if snapshot is not None:
        for stream in joining:
            stream.put(snapshot)
