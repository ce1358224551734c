"""The bounded HTTP server (common/httpserver.py) behind /metrics and `dashboard serve`:
limits, timeouts, shared event-stream messages and headers on every response.

Real sockets against a real server; only the limits are shrunk so that a test needs tens
of sockets and fractions of a second instead of thousands and tens of seconds
(tests/test_http_attack.py runs the full-size attack).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from common.httpserver import HttpServer, Limits, Response, Route
from dashboard.state import DashboardState
from dashboard.web import CSP, DashboardServer, Hub
from harness import wait_until

WAIT_S = 30.0


def exchange(port: int, request: bytes, timeout: float = WAIT_S) -> bytes:
    """Send ``request`` raw and read the whole answer (the server closes after one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_headers(raw: bytes) -> tuple[int, dict[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}


def label(i: int) -> bytes:
    record = {"id": f"t{i}", "label": "positive", "entity": "Volvo", "node_id": "n1",
              "scores": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}}  # fmt: skip
    return json.dumps(record).encode()


@pytest.fixture
def dashboard() -> Iterator[tuple[DashboardServer, Hub, DashboardState]]:
    state = DashboardState()
    hub = Hub(state, push_interval=3600)  # pushed by hand: hub.push()
    server = DashboardServer(("127.0.0.1", 0), state, hub)
    server.start()
    yield server, hub, state
    hub.stop()
    server.close()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /nothing-here HTTP/1.1\r\n\r\n", 404),
        (b"BREW / HTTP/1.1\r\n\r\n", 501),
        (b"DELETE / HTTP/1.1\r\n\r\n", 501),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"nonsense\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ],
)
def test_every_response_carries_the_csp_error_pages_included(dashboard, request_bytes, status):
    server, _, _ = dashboard
    answer = exchange(server.port, request_bytes)
    got, headers = status_and_headers(answer)
    assert got == status
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"


def test_idle_sockets_cannot_lock_out_a_request_and_cost_no_threads():
    limits = Limits(max_connections=20, request_timeout_s=30)
    server = HttpServer(("127.0.0.1", 0), {"/healthz": lambda _r: Response(200, b"ok\n")},
                        limits=limits)  # fmt: skip
    server.start()
    idle: list[socket.socket] = []
    try:
        threads = threading.active_count()
        for _ in range(100):  # five times the limit, never sending a byte
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        wait_until(
            lambda: server.evicted >= 80, WAIT_S, what="the oldest idle sockets to be closed"
        )
        assert server.connections() <= limits.max_connections
        assert threading.active_count() == threads  # no thread per socket
        answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
        # The evicted ones see their connection closed, not left hanging.
        idle[0].settimeout(WAIT_S)
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
        server.close()


def test_a_slowloris_request_is_answered_408_and_closed():
    limits = Limits(request_timeout_s=0.5)
    server = HttpServer(("127.0.0.1", 0), {"/": lambda _r: Response()}, limits=limits)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
                sock.sendall(b"a")  # a byte now and then does not reset the deadline
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < WAIT_S
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still trickling: also closed
    finally:
        server.close()


def open_stream_at(port: int, path: str, rcvbuf: int | None = 4096) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # a reader that never reads fills this and then stalls the server
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    return sock


def open_stream(port: int, rcvbuf: int | None = None) -> socket.socket:
    return open_stream_at(port, "/events", rcvbuf)


def test_new_streams_share_one_snapshot_and_a_stream_that_never_reads_is_dropped(dashboard):
    server, hub, state = dashboard
    state.ingest("repedge/labels", label(0))
    silent = [open_stream(server.port, rcvbuf=4096) for _ in range(10)]
    reader = open_stream(server.port)
    reader.settimeout(WAIT_S)
    try:
        wait_until(lambda: hub.streams() == 11, WAIT_S, what="11 streams to join")
        hub.push()
        assert hub.snapshots == 1  # one encoded snapshot for the eleven that joined
        received = b""
        while b"event: snapshot" not in received:
            received += reader.recv(65536)
        # Deltas far beyond the backlog: the silent streams fall behind and are dropped,
        # the reading one keeps up.
        for i in range(1, 400):
            state.ingest("repedge/labels", label(i) + b" " * 4000)
            hub.push()
            while f'"id":"t{i}"'.encode() not in received:
                received += reader.recv(65536)
        wait_until(lambda: hub.streams() == 1, WAIT_S, what="the silent streams to be dropped")
        assert server.streams() == 1
        silent[0].settimeout(WAIT_S)
        with contextlib.suppress(ConnectionResetError):  # closed by the server
            while silent[0].recv(65536):
                pass
    finally:
        for sock in [*silent, reader]:
            sock.close()


def test_streams_beyond_the_limit_are_refused_and_healthz_still_answers():
    state = DashboardState()
    hub = Hub(state, push_interval=3600)
    limits = Limits(max_connections=50, max_streams=3)
    server = DashboardServer(("127.0.0.1", 0), state, hub, limits=limits)
    server.start()
    streams = [open_stream(server.port) for _ in range(3)]
    try:
        wait_until(lambda: server.streams() == 3, WAIT_S, what="three streams")
        refused = exchange(server.port, b"GET /events HTTP/1.1\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503")
        assert exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        for sock in streams:
            sock.close()
        hub.stop()
        server.close()


def test_a_failing_handler_gives_500_and_the_server_keeps_serving():
    def broken(_request):
        raise RuntimeError("boom \x1b]52;c;aGk=\x07")

    ok = Route(lambda _r: Response(200, b"ok"))
    server = HttpServer(("127.0.0.1", 0), {"/broken": broken, "/ok": ok})
    server.start()
    try:
        assert exchange(server.port, b"GET /broken HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")
        assert exchange(server.port, b"HEAD /ok HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")
        assert exchange(server.port, b"GET /ok?x=1 HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\nok")
    finally:
        server.close()


def test_metrics_server_is_bounded_and_scrapes_under_idle_sockets():
    from node.metrics import METRICS_LIMITS, NodeMetrics

    metrics = NodeMetrics("n1", process=False)
    metrics.observe_batch(["neutral"], [], 0, [0.01], batch_size=1)
    server = metrics.serve(0)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    try:
        wait_until(lambda: server.evicted >= 100 - METRICS_LIMITS.max_connections, what="evictions")
        assert server.connections() <= METRICS_LIMITS.max_connections
        answer = exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        status, headers = status_and_headers(answer)
        assert status == 200 and b'repedge_labels_total{label="neutral"} 1.0' in answer
        assert "default-src 'none'" in headers["content-security-policy"]
        status, headers = status_and_headers(exchange(server.port, b"PUT / HTTP/1.1\r\n\r\n"))
        assert status == 501 and "content-security-policy" in headers
    finally:
        for sock in idle:
            sock.close()
        server.close()


def test_a_crashed_accept_loop_is_restarted_and_logged(caplog):
    limits = Limits(max_connections=1)
    server = HttpServer(("127.0.0.1", 0), {"/healthz": lambda _r: Response(200, b"ok\n")},
                        limits=limits)  # fmt: skip
    real_evict = server._evict
    crashes = []

    def evict_crashing_once() -> bool:  # a bug in the accept path, injected once
        if not crashes:
            crashes.append(1)
            raise RuntimeError("injected accept-loop bug")
        return real_evict()

    server._evict = evict_crashing_once  # type: ignore[method-assign]
    server.start()
    held = socket.create_connection(("127.0.0.1", server.port))
    try:
        wait_until(lambda: server.connections() == 1, WAIT_S, what="the first connection")
        second = socket.create_connection(("127.0.0.1", server.port))  # at the limit: crash
        second.close()
        wait_until(lambda: crashes, WAIT_S, what="the injected crash")
        answer = b""
        deadline = time.monotonic() + WAIT_S
        while not answer.startswith(b"HTTP/1.1 200") and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n", timeout=2)
        assert answer.startswith(b"HTTP/1.1 200")
        assert any("http-server thread died" in r.getMessage() for r in caplog.records)
    finally:
        held.close()
        server.close()


def test_api_state_is_encoded_once_for_many_readers_that_never_read(dashboard):
    server, _, state = dashboard
    for i in range(300):
        state.ingest("repedge/labels", label(i))
    shared = server.routes["/api/state"].handler
    first, second = shared(None), shared(None)
    assert first.body is second.body  # one bytes object, not one copy per request
    readers = [open_stream_at(server.port, "/api/state") for _ in range(50)]
    try:
        reader = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
        reader.sendall(b"GET /api/state HTTP/1.1\r\n\r\n")
        body = b""
        while chunk := reader.recv(65536):
            body += chunk
        reader.close()
        assert json.loads(body.split(b"\r\n\r\n", 1)[1])["labels_total"] == 300
        assert shared.encoded <= 5  # 51 requests within a few push intervals
    finally:
        for sock in readers:
            sock.close()


def test_unshared_answers_to_readers_that_never_read_stay_within_the_byte_budget():
    shared_body = b"s" * 400_000

    routes = {
        "/fresh": lambda _r: Response(200, b"f" * 400_000),  # a new body per request
        "/shared": lambda _r: Response(200, shared_body),
        "/healthz": Route(lambda _r: Response(200, b"ok\n"), inline=True),
    }
    limits = Limits(max_connections=100, max_pending_bytes=2**20, write_timeout_s=30)
    server = HttpServer(("127.0.0.1", 0), routes, limits=limits)
    server.start()
    readers = []
    try:
        readers += [open_stream_at(server.port, "/shared") for _ in range(10)]
        assert exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n").endswith(b"ok\n")
        assert server.overloaded == 0  # ten slow readers of one body: counted once
        readers += [open_stream_at(server.port, "/fresh") for _ in range(10)]
        wait_until(lambda: server.overloaded >= 8, WAIT_S, what="fresh bodies over budget")
        assert exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n").endswith(b"ok\n")
    finally:
        for sock in readers:
            sock.close()
        server.close()
