"""`dashboard serve`: the page, its vendored assets, the state as JSON and live updates.

The HTTP side is common/httpserver.py (bounded: connection and stream limits, request
and write timeouts, no thread per socket; docs/dashboard.md lists the limits). This
module is the route table: each route's handler lives with what it serves (static files
and JSON here, ``/events`` in dashboard/live.py). A new view adds its handlers in its own
module and its paths in :func:`routes`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http import HTTPStatus
from importlib import resources
from typing import Any

from common.httpserver import HttpServer, Limits, Request, Response, Route
from common.text import inert_json
from dashboard.history import HistoryStore
from dashboard.history_web import history_routes
from dashboard.live import Hub, sse
from dashboard.state import DashboardState

__all__ = ["LIMITS", "DashboardServer", "Hub", "json_response", "routes", "sse"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# Only the dashboard's own files may run or style the page (defence in depth on top of
# the page never putting MQTT data into markup). Every response carries it, error pages
# included.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# A dashboard is watched by a few browsers; these bound what a hostile client can hold.
LIMITS = Limits(
    max_connections=512,
    max_streams=64,
    request_timeout_s=10.0,
    write_timeout_s=10.0,
    max_body_bytes=65536,
    handler_threads=4,
    max_pending_bytes=64 * 2**20,
)


def json_response(data: Any, status: int = HTTPStatus.OK) -> Response:
    """JSON with every string made inert (what MQTT carried is shown, never acted on)."""
    body = json.dumps(inert_json(data), separators=(",", ":")).encode()
    return Response(status, body, "application/json")


def _static_files() -> dict[str, Response]:
    """Every file the page may load, read once: URL path -> response (shared bytes)."""
    files: dict[str, Response] = {}
    root = resources.files("dashboard") / "static"

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in _TYPES:
                response = Response(HTTPStatus.OK, entry.read_bytes(), _TYPES[suffix])
                files[f"/static/{prefix}{entry.name}"] = response

    walk(root, "")
    files["/"] = files["/static/index.html"]
    return files


def _file(response: Response) -> Route:
    # A fresh Response around the shared body: handlers may not share header dicts.
    return Route(
        lambda _request: Response(response.status, response.body, response.content_type),
        inline=True,
    )


class SharedSnapshot:
    """``/api/state``: the snapshot encoded at most once per ``max_age_s``; requests in
    between get the same bytes object. 500 clients that ask and never read then hold one
    400 KB body between them, not 500 copies."""

    def __init__(self, state: DashboardState, max_age_s: float = 0.5) -> None:
        self.state = state
        self.max_age_s = max_age_s
        self.encoded = 0  # snapshots encoded so far
        self._lock = threading.Lock()
        self._body = b""
        self._at = -math.inf

    def __call__(self, _request: Request) -> Response:
        with self._lock:
            now = time.monotonic()
            if now - self._at > self.max_age_s:
                self._body = json_response(self.state.snapshot()).body
                self._at = now
                self.encoded += 1
            return Response(HTTPStatus.OK, self._body, "application/json")


def routes(
    state: DashboardState, hub: Hub, history: HistoryStore | None = None
) -> dict[str, Route]:
    """Path -> route for everything `dashboard serve` answers."""
    table: dict[str, Route] = {path: _file(r) for path, r in _static_files().items()}
    table["/healthz"] = Route(lambda _r: Response(HTTPStatus.OK, b"ok\n"), inline=True)
    table["/api/state"] = Route(SharedSnapshot(state))
    table["/events"] = Route(hub.open, inline=True)
    flush = state.recorder.flush if state.recorder is not None else lambda: None
    table.update(history_routes(history, flush))  # /api/history*: dashboard/history_web.py
    return table


class DashboardServer(HttpServer):
    """Listens at construction (OSError if it cannot); ``start()`` serves, ``close()``
    stops."""

    def __init__(
        self,
        address: tuple[str, int],
        state: DashboardState,
        hub: Hub,
        history: HistoryStore | None = None,
        limits: Limits = LIMITS,
        extra_routes: dict[str, Route] | None = None,
    ) -> None:
        self.state = state
        self.hub = hub
        self.history = history
        super().__init__(
            address,
            {**routes(state, hub, history), **(extra_routes or {})},
            name="dashboard",
            limits=limits,
            headers=HEADERS,
        )
        hub.server = self
