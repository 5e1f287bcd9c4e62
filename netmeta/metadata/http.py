"""A small HTTP/1.1 server protocol for the metadata hot path.

Why not aiohttp here: every guest request is a handful of header lines and a
small answer, and the listener is opened inside each namespace by another
part of the process. A plain :class:`asyncio.Protocol` keeps per-request cost
to one parse and one write, accepts a pre-made socket, and gives full control
over what a hostile guest can make it do. The rules it enforces:

* HTTP/1.0 and 1.1, keep-alive and pipelining (answers in request order);
* bodies only with ``Content-Length`` (at most ``MAX_BODY``, else 413);
  ``Transfer-Encoding`` is refused with 400 — no guest needs chunked uploads;
* the header block is capped (431) and lines must be well formed (400);
* a request must arrive whole within ``HEADER_TIMEOUT`` of its first byte
  (trickling a byte at a time does not extend it), an idle connection is
  closed after ``IDLE_TIMEOUT``, and one guest holds at most
  ``MAX_CONNECTIONS_PER_PEER`` connections per listener — one process serves
  every tenant, so no guest may use up its file descriptors;
* a handler exception becomes a bare 500 and is logged — never shown;
* a :class:`Response` with ``ttl`` is sent with that IP TTL (the IMDSv2 hop
  limit), and the connection keeps that TTL until it closes: TCP sends
  retransmissions with the socket's *current* TTL, so restoring it would let
  a retransmitted token cross the hops the first copy could not (a relay
  behind the guest got the token ~200 ms later). A guest talking to its own
  listener is one L2 hop away, so later answers on the connection still reach it.

Every answered request is counted in an :class:`AccessLog` keyed by listener
context and peer, so tests can prove *which* listener answered a guest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable
from urllib.parse import unquote

LOG = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
MAX_HEADER_LINES = 100
MAX_BODY = 64 * 1024
MAX_PIPELINE_BYTES = 256 * 1024
MAX_PENDING = 128
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS_PER_PEER = 64

# Open connections by (listener kind, listener id, peer), across all listeners.
_OPEN_CONNECTIONS: collections.Counter[tuple[str, str, str]] = collections.Counter()
SERVER = "netmeta"
# Compiled once: checking characters one by one was the parser's main cost.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f]")
_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class ListenerContext:
    """Which listener a request came through: ``network``, ``router`` or ``signed``."""

    kind: str
    id: str


SIGNED = ListenerContext(kind="signed", id="")


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    peer_ip: str
    context: ListenerContext
    version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.headers if key.lower() == lower]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    ttl: int | None = None


# A handler answers at once (a Response) or later (an awaitable, for I/O).
Handler = Callable[[Request], "Response | Awaitable[Response]"]


@dataclass(frozen=True)
class AccessEntry:
    kind: str
    id: str
    peer_ip: str
    method: str
    path: str
    status: int


class AccessLog:
    """Counts of answered requests by (context kind, context id, peer IP), and the last N."""

    def __init__(self, keep: int = 1000) -> None:
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.recent: collections.deque[AccessEntry] = collections.deque(maxlen=keep)

    def record(self, context: ListenerContext, peer: str, method: str, path: str, status: int) -> None:
        self.counts[(context.kind, context.id, peer)] += 1
        self.recent.append(AccessEntry(context.kind, context.id, peer, method, path, status))

    def count(self, kind: str, id: str, peer: str | None = None) -> int:
        return sum(n for (k, i, p), n in self.counts.items() if k == kind and i == id and (peer is None or p == peer))

    def clear(self) -> None:
        self.counts.clear()
        self.recent.clear()


ACCESS_LOG = AccessLog()

_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Parse a request line and header lines; raise _ProtocolError on anything odd."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # latin-1 decodes everything; kept for clarity
        raise _ProtocolError(400, "undecodable request") from exc
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _ProtocolError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise _ProtocolError(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/") and version[5:6].isdigit():
            raise _ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _ProtocolError(400, "malformed HTTP version")
    if not target or _TARGET_BAD.search(target):
        raise _ProtocolError(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise _ProtocolError(431, "too many header lines")
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.match(name):
            raise _ProtocolError(400, "malformed header line")
        value = value.strip(" \t")
        if _VALUE_BAD.search(value):
            raise _ProtocolError(400, "control character in header value")
        headers.append((name, value))
    return method, target, version, headers


def _split_target(target: str) -> tuple[str, str]:
    if target.startswith("/"):
        raw_path, _, query = target.partition("?")
    elif target.lower().startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        raw_path, _, query = ("/" if slash < 0 else rest[slash:]).partition("?")
    else:
        raise _ProtocolError(400, "request target must be a path")
    raw_path = raw_path.partition("#")[0]
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError as exc:
        raise _ProtocolError(400, "path is not valid UTF-8") from exc
    if "\0" in path:
        raise _ProtocolError(400, "NUL in path")
    return path, query


class HttpProtocol(asyncio.Protocol):
    """One connection: parse requests, call the handler in order, write answers."""

    def __init__(self, handler: Handler, context: ListenerContext, access_log: AccessLog | None = None) -> None:
        self.handler = handler
        self.context = context
        self.access_log = access_log if access_log is not None else ACCESS_LOG
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.buffer = bytearray()
        self.pending: collections.deque[Request | _ProtocolError] = collections.deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        # Whether the request now arriving already has its deadline.
        self.request_deadline_set = False
        self.counted: tuple[str, str, str] | None = None
        self.loop = asyncio.get_event_loop()
        self.continue_sent = False
        self.corked = False

    # --- connection lifecycle ------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any stream transport (asyncio's or uvloop's) has write/close/pause_reading.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""
        if self.peer_ip.startswith("::ffff:") and "." in self.peer_ip:
            self.peer_ip = self.peer_ip[7:]
        key = (self.context.kind, self.context.id, self.peer_ip)
        if _OPEN_CONNECTIONS[key] >= MAX_CONNECTIONS_PER_PEER:
            LOG.warning("metadata: %s holds %d connections to %s %s; refusing more",
                        self.peer_ip, MAX_CONNECTIONS_PER_PEER, self.context.kind, self.context.id)
            self.closing = True
            transport.close()
            return
        _OPEN_CONNECTIONS[key] += 1
        self.counted = key
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.request_deadline_set = True  # the first request is due HEADER_TIMEOUT from now
        self._arm(HEADER_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted is not None:
            _OPEN_CONNECTIONS[self.counted] -= 1
            if _OPEN_CONNECTIONS[self.counted] <= 0:
                del _OPEN_CONNECTIONS[self.counted]
            self.counted = None
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
        self.transport = None

    def _arm(self, delay: float) -> None:
        """Move the connection's deadline; at most one timer exists per connection.

        Re-scheduling a timer for every request cost more than parsing it, so
        a later deadline is taken lazily (the timer, firing early, re-arms
        itself); only an earlier one replaces the timer.
        """
        self.deadline = self.loop.time() + delay
        if self.timer is not None and self.timer.when() > self.deadline:
            self.timer.cancel()
            self.timer = None
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if self.transport is None or self.worker is not None:
            return  # an answer is on its way; _settle arms the next deadline
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._timeout)
            return
        self.transport.close()

    # --- parsing ---------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        try:
            self._parse()
        except Exception:  # a parser bug must not take down the listener
            LOG.exception("metadata: parser failure from %s", self.peer_ip)
            self.pending.append(_ProtocolError(400, "bad request"))
            self.buffer.clear()
            self.closing = True
        backlog = len(self.buffer) > MAX_PIPELINE_BYTES or len(self.pending) >= MAX_PENDING
        if backlog and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        self._kick()

    def _parse(self) -> None:
        while self.buffer and not self.closing and len(self.pending) < MAX_PENDING:
            end = self.buffer.find(b"\r\n\r\n")
            sep = 4
            lf = self.buffer.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, sep = lf, 2
            if end < 0:
                # Incomplete: wait for more (a stray CRLF between requests is
                # tolerated, RFC 9112 §2.2: lstrip below drops it).
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._fail(431, "request header block too large")
                return
            if end > MAX_HEADER_BYTES:
                self._fail(431, "request header block too large")
                return
            head = bytes(self.buffer[:end]).lstrip(b"\r\n")
            try:
                method, target, version, headers = _parse_head(head)
                path, query = _split_target(target)
                length = self._body_length(headers)
            except _ProtocolError as err:
                self._fail(err.status, err.message)
                return
            start = end + sep
            if len(self.buffer) - start < length:
                if length and not self.continue_sent and self.transport is not None:
                    expect = [v for k, v in headers if k.lower() == "expect"]
                    if expect and expect[0].lower() == "100-continue" and version == "HTTP/1.1":
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        self.continue_sent = True
                return
            body = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            self.continue_sent = False
            self.request_deadline_set = False  # what follows is a new request
            self.pending.append(Request(method, target, path, query, headers, body, self.peer_ip, self.context, version))

    def _body_length(self, headers: list[tuple[str, str]]) -> int:
        lengths: set[str] = set()
        for key, value in headers:
            low = key.lower()
            if low == "transfer-encoding":
                raise _ProtocolError(400, "Transfer-Encoding is not supported; send Content-Length")
            if low == "content-length":
                lengths.update(v.strip() for v in value.split(","))
        if not lengths:
            return 0
        if len(lengths) != 1:
            raise _ProtocolError(400, "conflicting Content-Length")
        text = lengths.pop()
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise _ProtocolError(400, "malformed Content-Length")
        if int(text) > MAX_BODY:
            raise _ProtocolError(413, f"request body larger than {MAX_BODY} bytes")
        return int(text)

    def _fail(self, status: int, message: str) -> None:
        self.pending.append(_ProtocolError(status, message))
        self.buffer.clear()
        self.closing = True  # after a framing error the stream cannot be trusted

    # --- answering -------------------------------------------------------
    def _kick(self) -> None:
        """Answer pending requests in order; only one needing I/O gets a task.

        Most answers need no I/O, and creating a task per request is most of
        what a small request costs in asyncio: those are written right here.
        A handler that returns an awaitable parks the queue behind one task
        until its answer is written, so pipelined answers never reorder.
        """
        while self.pending and self.worker is None and self.transport is not None:
            item = self.pending.popleft()
            if isinstance(item, _ProtocolError):
                self.access_log.record(self.context, self.peer_ip, "-", "-", item.status)
                self._write(item.status, item.message.encode() + b"\n", "text/plain; charset=UTF-8", [], None, False, "HTTP/1.1", False)
                self._close_now()
                return
            try:
                answer = self.handler(item)
            except Exception:
                answer = self._internal_error(item)
            if isinstance(answer, Response):
                self._respond(item, answer)
                if self.closing:
                    self.pending.clear()  # nothing is answered after "Connection: close"
            else:
                self.worker = self.loop.create_task(self._finish(item, answer))
                return
            if not self.pending and self.buffer and not self.closing:
                self._parse_safely()
        if self.worker is None:
            self._settle()

    async def _finish(self, request: Request, answer: Awaitable[Response]) -> None:
        try:
            try:
                response = await answer
            except asyncio.CancelledError:
                raise
            except Exception:
                response = self._internal_error(request)
            self._respond(request, response)
        finally:
            self.worker = None
        if self.transport is not None:
            if self.buffer and not self.closing:
                self._parse_safely()
            self._kick()

    def _settle(self) -> None:
        """After a batch: resume reading, close, or wait for the next request."""
        if self.transport is None:
            return
        if self.paused and len(self.buffer) <= MAX_PIPELINE_BYTES and len(self.pending) < MAX_PENDING:
            self.paused = False
            self.transport.resume_reading()
        if self.closing and not self.pending:
            self._close_now()
        elif not self.pending:
            if not self.buffer:
                self.request_deadline_set = False
                self._arm(IDLE_TIMEOUT)
            elif not self.request_deadline_set:
                # The first bytes of a request: it is due whole by HEADER_TIMEOUT.
                # Later chunks of the same request never move this deadline.
                self.request_deadline_set = True
                self._arm(HEADER_TIMEOUT)

    def _close_now(self) -> None:
        """Send the FIN now, with the last answer if it is still in the socket.

        Whoever closes first keeps the connection in TIME_WAIT for 60 s. A
        transport's ``close()`` sends the FIN one loop iteration later, by
        which time a fast client (wrk, curl) has read the answer and closed
        first: the TIME_WAIT then sits in the *guest*, which runs out of
        ephemeral ports after ~28,000 short connections. ``shutdown`` on the
        socket itself, while the answer is still corked (see :meth:`_write`),
        puts the FIN in the answer's last segment, as haproxy does; the
        TIME_WAIT then stays on the server side, where it costs nothing.
        """
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and not transport.get_write_buffer_size():
            try:
                # uvloop's socket object has no shutdown(); a socket object on
                # the same descriptor does (detached: the transport owns it).
                raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
                try:
                    raw.shutdown(socket.SHUT_WR)
                finally:
                    raw.detach()
            except OSError:
                pass
        elif sock is not None and self.corked:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:
                pass
        self.corked = False
        transport.close()

    def _parse_safely(self) -> None:
        try:
            self._parse()
        except Exception:
            LOG.exception("metadata: parser failure from %s", self.peer_ip)
            self._fail(400, "bad request")

    def _internal_error(self, request: Request) -> Response:
        LOG.exception("metadata: handler failed for %s %s from %s", request.method, request.path, self.peer_ip)
        return Response(500, b"Internal error; the metadata service logged the details.\n")

    def _respond(self, request: Request, response: Response) -> None:
        keep = self._keep_alive(request)
        if not keep:
            self.closing = True
        # Record before writing, so a client that has its answer can rely on the log.
        self.access_log.record(self.context, self.peer_ip, request.method, request.path, response.status)
        self._write(
            response.status,
            response.body,
            response.content_type,
            response.headers,
            response.ttl,
            keep,
            request.version,
            request.method == "HEAD",
        )

    def _keep_alive(self, request: Request) -> bool:
        if self.closing:
            return False
        conn = ",".join(request.header_all("Connection")).lower()
        if request.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def _write(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]],
        ttl: int | None,
        keep: bool,
        version: str,
        head_only: bool,
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}".encode(),
            b"Server: " + SERVER.encode(),
            b"Date: " + _date(),
            b"Content-Type: " + content_type.encode("latin-1", "replace"),
            b"Content-Length: " + str(len(body)).encode(),
        ]
        if not keep:
            lines.append(b"Connection: close")
        elif version == "HTTP/1.0":
            lines.append(b"Connection: keep-alive")
        for name, value in extra:
            lines.append(f"{name}: {value}".encode("latin-1", "replace"))
        payload = b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)
        if not keep and not self.corked:
            # Held back until _close_now adds the FIN: one segment for both.
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    self.corked = True
                except OSError:
                    pass
        if ttl is None:
            transport.write(payload)
            return
        self._write_with_ttl(transport, payload, ttl)

    def _write_with_ttl(self, transport: asyncio.Transport, payload: bytes, ttl: int) -> None:
        """Send with a given IP TTL / hop limit, and keep it for the rest of the connection.

        Never restored: the kernel builds every (re)transmitted segment's IP
        header with the TTL current at that moment, so a restore would let a
        retransmission of the token reach a client the hop limit must exclude.
        """
        sock = transport.get_extra_info("socket")
        if sock is not None:
            if sock.family == socket.AF_INET6 and not self.peer_ip.count("."):
                level, option = socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS
            else:  # IPv4, also an IPv4 guest on a dual-stack socket
                level, option = socket.IPPROTO_IP, socket.IP_TTL
            try:
                sock.setsockopt(level, option, ttl)
            except OSError:
                pass
        transport.write(payload)
