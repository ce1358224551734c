"""A small HTTP/1.1 server with hard limits, for every HTTP endpoint repedge runs.

``node start --metrics-port`` (/metrics) and ``dashboard serve`` (page, JSON, Server-Sent
Events) both face whatever can reach their port, so the server is built to stay up under
idle and slow clients rather than to be fast:

* one asyncio event loop on one thread: an idle socket costs a file descriptor and a
  coroutine, never a thread (handlers that may block run on a small fixed thread pool);
* at most ``max_connections`` sockets; at the limit the oldest connection that has not yet
  sent a complete request is closed to make room, so idle and slowloris sockets cannot
  lock out a real request (``/healthz`` keeps answering);
* the request head (and a small body) must arrive within ``request_timeout_s``, every
  write must finish within ``write_timeout_s``; one request per connection
  (``Connection: close``), so nothing lingers idle between requests;
* an event stream holds references to shared, already-encoded messages (sent with
  ``sock_sendall`` on a memoryview, never copied per client) and at most ``stream_backlog``
  of them: a client further behind is dropped and reconnects from a fresh snapshot;
* answers being sent count against ``max_pending_bytes`` (a body shared by many responses
  counts once; over it: 503), and every socket has a fixed ``send_buffer``, so clients
  that never read hold bounded memory in the process and in the kernel;
* every response, error pages included, carries the server's default headers (the
  dashboard's Content-Security-Policy);
* running out of file descriptors (EMFILE) pauses accepting instead of killing anything,
  and the loop thread is supervised: if it ever dies it is restarted and logged.

Routes are a table: path -> :class:`Route` (handler, methods, whether it may run on the
loop). A handler gets a :class:`Request` and returns a :class:`Response` or an
:class:`EventStream`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

from common.supervise import supervised_thread
from common.text import inert

log = logging.getLogger("repedge.http")

SUPPORTED_METHODS = ("GET", "HEAD", "POST")
_HEAD_END = b"\r\n\r\n"
_ACCEPT_PAUSE_S = 0.5
# After an answer: how long, and how much, unread input is drained before closing.
_LINGER_S = 2.0
_LINGER_BYTES = 256 * 1024  # after EMFILE/ENFILE: let connections close before accepting again


@dataclass(frozen=True)
class Limits:
    """What one server may hold at once; the defaults suit a node's /metrics."""

    max_connections: int = 64
    max_streams: int = 8
    request_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    max_head_bytes: int = 8192
    max_headers: int = 64
    max_body_bytes: int = 65536
    stream_backlog: int = 64
    # Kernel send buffer of every connection, fixed (no autotuning to megabytes): a client
    # that stops reading stalls its answer quickly, so what it holds is counted by
    # max_pending_bytes (or the stream backlog) instead of hiding in kernel memory.
    send_buffer: int = 65536
    heartbeat_s: float = 15.0
    handler_threads: int = 2
    # Response bytes being sent at once, bodies shared between responses counted once; a
    # response that would go over it gets 503 (many slow readers of a large answer).
    max_pending_bytes: int = 8 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_streams", "max_head_bytes", "max_headers",
                     "stream_backlog", "send_buffer", "handler_threads",
                     "max_pending_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("request_timeout_s", "write_timeout_s", "heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if self.max_body_bytes < 0:
            raise ValueError("max_body_bytes must be 0 or more")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


class EventStream:
    """One client's Server-Sent Events: a bounded queue of shared, encoded messages.

    :meth:`put` and :meth:`close` must be called on the server's loop (use
    :meth:`HttpServer.call_soon` from other threads). ``first`` is sent before anything
    queued; ``on_close`` runs on the loop when the stream ends for any reason.
    """

    def __init__(
        self,
        first: bytes = b"",
        backlog: int = 64,
        on_close: Callable[[EventStream], None] | None = None,
    ) -> None:
        self.first = first
        self.on_close = on_close
        self.dropped = False
        self._backlog = backlog
        self._queue: collections.deque[bytes] = collections.deque()
        self._ready: asyncio.Event | None = None

    def put(self, data: bytes) -> bool:
        """Queue ``data`` (shared, not copied); False, and the stream closes, when the
        client is ``backlog`` messages behind."""
        if self.dropped:
            return False
        if len(self._queue) >= self._backlog:
            self.close()
            return False
        self._queue.append(data)
        if self._ready is not None:
            self._ready.set()
        return True

    def close(self) -> None:
        self.dropped = True
        self._queue.clear()
        if self._ready is not None:
            self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    async def next(self, timeout: float) -> bytes | None:
        """The next message; ``b""`` after ``timeout`` seconds of silence; None once closed."""
        if self._ready is None:
            self._ready = asyncio.Event()
        if not self._queue and not self.dropped:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return b""
        if self.dropped:
            return None
        return self._queue.popleft()


Handler = Callable[[Request], Response | EventStream]


@dataclass(frozen=True)
class Route:
    """``inline`` handlers run on the loop and must not block (static files, opening a
    stream); the others run on the server's small thread pool."""

    handler: Handler
    methods: tuple[str, ...] = ("GET", "HEAD")
    inline: bool = False


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection:
    __slots__ = ("opened", "phase", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.phase = "request"  # request -> response | stream -> closing
        self.opened = time.monotonic()


class HttpServer:
    """Listens on ``address`` from construction (so a busy port fails at once, with
    OSError); :meth:`start` serves on a supervised background thread."""

    def __init__(
        self,
        address: tuple[str, int],
        routes: Mapping[str, Route | Handler],
        *,
        name: str = "http",
        limits: Limits | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.routes: dict[str, Route] = {
            path: r if isinstance(r, Route) else Route(r) for path, r in routes.items()
        }
        self.headers = dict(headers or {})
        self.listener = _listen(address, max(1024, 4 * self.limits.max_connections))
        self.evicted = 0  # connections closed to make room at max_connections
        self.refused = 0  # connections closed at once (limit reached, nothing to evict)
        self._connections: dict[int, _Connection] = {}  # insertion order = age
        self._streams = 0
        self.overloaded = 0  # responses refused (503) by max_pending_bytes
        # id(body) -> [body, responses sending it]: the body is kept alive while counted.
        self._pending: dict[int, list] = {}
        self._pending_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._pool = ThreadPoolExecutor(self.limits.handler_threads, f"{name}-handler")
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.listener.getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread = supervised_thread(self._run, f"{self.name}-server", self._stop, log)

    def close(self) -> None:
        """Stop serving, close every connection and the listening socket."""
        self._stop.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(5.0)
        self.listener.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def call_soon(self, callback: Callable[..., object], *args: object) -> bool:
        """Run ``callback(*args)`` on the server's loop; False when it is not running."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    def connections(self) -> int:
        return len(self._connections)

    def streams(self) -> int:
        return self._streams

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self._stop.is_set():
            return
        accepting = asyncio.create_task(self._accept_forever())
        stopping = asyncio.create_task(self._stopped.wait())
        try:
            await asyncio.wait({accepting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if accepting.done() and not self._stopped.is_set():
                # A bug, not a client: end the loop so that the supervisor restarts it
                # (and logs why) rather than listening without ever accepting again.
                accepting.result()
                raise RuntimeError("the accept loop ended")
        finally:
            accepting.cancel()
            stopping.cancel()
            for conn in list(self._connections.values()):
                conn.task.cancel()
            await asyncio.gather(
                accepting,
                stopping,
                *(c.task for c in self._connections.values()),
                return_exceptions=True,
            )
            self._connections.clear()
            self._streams = 0
            self._loop = None

    # -- connections ----------------------------------------------------------------------

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(self.listener)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: wait, never give up
                log.warning("%s: cannot accept a connection (%s); pausing", self.name, exc)
                await asyncio.sleep(_ACCEPT_PAUSE_S)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
            # sock_accept does not suspend while connections are waiting: yield once per
            # accept so that evicted connections really close before the next one comes in.
            await asyncio.sleep(0)
            if len(self._connections) >= self.limits.max_connections and not self._evict():
                self.refused += 1
                _close_now(sock, self._error_bytes(HTTPStatus.SERVICE_UNAVAILABLE, "busy"))
                continue
            client = address[0] if isinstance(address, tuple) else str(address)
            task = asyncio.create_task(self._serve(sock, client))
            self._connections[id(task)] = _Connection(task)
            task.add_done_callback(lambda t: self._connections.pop(id(t), None))

    def _evict(self) -> bool:
        """Close the oldest connection still waiting for its request; False if none is."""
        for key, conn in self._connections.items():
            if conn.phase in ("request", "closing") and not conn.task.done():
                del self._connections[key]  # counted out now; its socket closes on cancel
                conn.task.cancel()
                self.evicted += 1
                return True
        return False

    async def _serve(self, sock: socket.socket, client: str) -> None:
        conn = self._connections.get(id(asyncio.current_task()))
        try:
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    request = await self._read_request(sock, client)
            except HttpError as exc:
                await self._send(sock, self._error_bytes(exc.status, str(exc)))
                await self._linger(sock, conn)
                return
            except TimeoutError:
                await self._send(sock, self._error_bytes(HTTPStatus.REQUEST_TIMEOUT, "too slow"))
                await self._linger(sock, conn)
                return
            if conn is not None:
                conn.phase = "response"
            result = await self._dispatch(request)
            if isinstance(result, EventStream):
                if conn is not None:
                    conn.phase = "stream"
                await self._stream(sock, request, result)
            else:
                await self._respond(sock, request, result)
            await self._linger(sock, conn)
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass  # the client went away, was too slow, was evicted, or we are stopping
        finally:
            sock.close()

    async def _respond(self, sock: socket.socket, request: Request, response: Response) -> None:
        """Send ``response``, counting its body against ``max_pending_bytes`` while it is
        being sent. A body shared by many responses (a static file, the shared snapshot)
        counts once: slow readers cannot make the server hold more than the budget."""
        body = b"" if request.method == "HEAD" else response.body
        key = id(body)
        held = self._pending.get(key)
        if (
            held is None
            and body
            and self._pending_bytes + len(body) > self.limits.max_pending_bytes
        ):
            self.overloaded += 1
            await self._send(sock, self._error_bytes(HTTPStatus.SERVICE_UNAVAILABLE, "busy"))
            return
        if held is None:
            held = self._pending[key] = [body, 0]
            self._pending_bytes += len(body)
        held[1] += 1
        try:
            await self._send(sock, self._response_bytes(response), body)
        finally:
            held[1] -= 1
            if held[1] == 0:
                del self._pending[key]
                self._pending_bytes -= len(body)

    async def _linger(self, sock: socket.socket, conn: _Connection | None) -> None:
        """Half-close, then read and discard what the client still sends, briefly: closing
        with unread input would reset the connection and could destroy the answer
        before the client reads it (an oversized head gets its 431, not a reset)."""
        if conn is not None:
            conn.phase = "closing"  # evictable again, like a connection without a request
        sock.shutdown(socket.SHUT_WR)
        loop = asyncio.get_running_loop()
        left = _LINGER_BYTES
        async with asyncio.timeout(_LINGER_S):
            while left > 0 and (chunk := await loop.sock_recv(sock, min(65536, left))):
                left -= len(chunk)

    async def _read_request(self, sock: socket.socket, client: str) -> Request:
        loop = asyncio.get_running_loop()
        limits = self.limits
        buffer = bytearray()
        too_large = HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        while (end := buffer.find(_HEAD_END)) < 0:
            if len(buffer) > limits.max_head_bytes:
                raise too_large
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise OSError("closed before a complete request")
            buffer += chunk
        if end > limits.max_head_bytes:
            raise too_large
        method, target, headers = _parse_head(bytes(buffer[:end]), limits.max_headers)
        body = bytes(buffer[end + len(_HEAD_END) :])
        length = _content_length(headers, limits.max_body_bytes)
        while len(body) < length:
            chunk = await loop.sock_recv(sock, min(65536, length - len(body)))
            if not chunk:
                raise OSError("closed before the whole body")
            body += chunk
        path, _, query = target.partition("?")
        return Request(method, path, parse_qs(query), headers, body[:length], client)

    async def _dispatch(self, request: Request) -> Response | EventStream:
        route = self.routes.get(request.path)
        if request.method not in SUPPORTED_METHODS:
            return text(HTTPStatus.NOT_IMPLEMENTED, f"method {request.method} not supported")
        if route is None:
            return text(HTTPStatus.NOT_FOUND, "not found")
        if request.method not in route.methods:
            response = text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
            response.headers["Allow"] = ", ".join(route.methods)
            return response
        try:
            if route.inline:
                result = route.handler(request)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, route.handler, request)
        except Exception:
            log.exception("%s: %s %s failed", self.name, request.method, inert(request.path))
            return text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        if isinstance(result, EventStream) and self._streams >= self.limits.max_streams:
            result.close()
            if result.on_close is not None:
                result.on_close(result)
            return text(HTTPStatus.SERVICE_UNAVAILABLE, "too many event streams")
        return result

    async def _stream(self, sock: socket.socket, request: Request, stream: EventStream) -> None:
        self._streams += 1
        try:
            head = self._head_bytes(HTTPStatus.OK, "text/event-stream", None, {})
            await self._send(sock, head)
            if request.method == "HEAD":
                return
            if stream.first:
                await self._send(sock, stream.first)
                stream.first = b""  # the shared snapshot is no longer held by this client
            while (data := await stream.next(self.limits.heartbeat_s)) is not None:
                # Silence: a comment line lets proxies and the browser see a live link.
                await self._send(sock, data or b": keep-alive\n\n")
        finally:
            self._streams -= 1
            stream.close()
            if stream.on_close is not None:
                stream.on_close(stream)

    async def _send(self, sock: socket.socket, *parts: bytes) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.limits.write_timeout_s):
            for part in parts:
                if part:
                    await loop.sock_sendall(sock, part)

    # -- bytes on the wire ----------------------------------------------------------------

    def _head_bytes(
        self, status: int, content_type: str, length: int | None, extra: Mapping[str, str]
    ) -> bytes:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Type: {content_type}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines.append("Connection: close")
        lines += [f"{k}: {v}" for k, v in {**self.headers, **extra}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _response_bytes(self, response: Response) -> bytes:
        return self._head_bytes(
            response.status, response.content_type, len(response.body), response.headers
        )

    def _error_bytes(self, status: int, message: str) -> bytes:
        body = (message + "\n").encode()
        return self._head_bytes(status, "text/plain; charset=utf-8", len(body), {}) + body


def _listen(address: tuple[str, int], backlog: int) -> socket.socket:
    """``backlog``: handshakes the kernel completes while the loop is busy. A burst that
    fills it makes the kernel drop SYNs, and every client (``/healthz`` too) then waits a
    second for its retry; queued handshakes cost only kernel memory, so it is generous.
    The kernel caps it at net.core.somaxconn."""
    host, port = address
    family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=backlog, reuse_port=False)
    listener.setblocking(False)
    return listener


def _close_now(sock: socket.socket, message: bytes) -> None:
    """Best effort: a short answer into the kernel buffer, then close (never waits)."""
    with contextlib.suppress(OSError):
        sock.send(message)
    sock.close()


def _parse_head(head: bytes, max_headers: int) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.0 or HTTP/1.1 only")
    if not method.isalpha() or not method.isupper():
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad method")
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad request target")
    if len(lines) - 1 > max_headers:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad header field")
        headers[name.lower()] = value.strip()
    return method, target, headers


def _content_length(headers: Mapping[str, str], limit: int) -> int:
    if "transfer-encoding" in headers:
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "chunked request bodies not supported")
    raw = headers.get("content-length", "0")
    if not raw.isdigit() or len(raw) > 12:
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    if int(raw) > limit:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    return int(raw)
