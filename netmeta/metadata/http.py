"""The asyncio side of the metadata HTTP server: sockets, timers, and the close.

Why not aiohttp here: every guest request is a handful of header lines and a
small answer, and the listener is opened inside each namespace by another
part of the process. A plain :class:`asyncio.Protocol` keeps per-request cost
to one parse and one write, accepts a pre-made socket, and gives full control
over what a hostile guest can make it do.

Every protocol decision (framing, limits, keep-alive, pipelining, deadlines)
is made by the sans-I/O :class:`netmeta.metadata.h1.Connection`; this module
only moves bytes and time between it and the transport, and adds what needs
the socket:

* a connection is admitted by the service's :class:`ConnectionCaps` first —
  per resolved port, per listener, per process, sized from the descriptor
  limit (one process serves every tenant, so no guest may use up its
  descriptors); a refusal is a reset, and its log line is rate-limited;
* a handler exception becomes a bare 500 and is logged — never shown;
* an answer that ends the connection leaves *with* its FIN (see
  :meth:`HttpProtocol._close_now`), so the TIME_WAIT stays with the server;
* a :class:`Response` with ``ttl`` is sent with that IP TTL (the IMDSv2 hop
  limit), and the connection keeps that TTL until it closes: TCP sends
  retransmissions with the socket's *current* TTL, so restoring it would let
  a retransmitted token cross the hops the first copy could not (a relay
  behind the guest got the token ~200 ms later). A guest talking to its own
  listener is one L2 hop away, so later answers on the connection still reach it.

What connections share — limits, admission, the access log, the Date cache,
the deadlines — is one :class:`HttpShared` object owned by the service, not
module state.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Awaitable, Callable, NamedTuple

from netmeta.logs import RateLimitedLog
from netmeta.metadata import metrics
from netmeta.model.ip import canonical_ip
from netmeta.model.metadata.conncount import SharedCounts
from netmeta.metadata.h1 import (
    MEMO_HEAD_BYTES,
    SIGNED,
    BadRequest,
    Connection,
    Limits,
    ListenerContext,
    Replay,
    Request,
    Response,
    head_parts,
)

__all__ = ["SIGNED", "AccessLog", "Caps", "ConnectionCaps", "HttpProtocol", "HttpShared", "Limits", "ListenerContext",
           "Replay", "Replays", "Request", "Response"]

LOG = logging.getLogger(__name__)

# A handler answers at once (a Response) or later (an awaitable, for I/O).
Handler = Callable[[Request], "Response | Awaitable[Response]"]


class AccessEntry(NamedTuple):
    """One answered request (a tuple: one is made for every request)."""

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

    def again(self, caller: tuple[str, str, str], entry: AccessEntry) -> None:
        """:meth:`record` of an answer given again: its caller and entry made once (see :class:`Again`)."""
        self.counts[caller] += 1
        self.recent.append(entry)

    def count(self, kind: str, id: str, peer: str | None = None) -> int:
        return sum(n for (k, i, p), n in self.counts.items() if k == kind and i == id and (peer is None or p == peer))

    def clear(self) -> None:
        self.counts.clear()
        self.recent.clear()


@dataclass(frozen=True)
class Caps:
    """How many connections one guest, one listener and the whole process may hold."""

    per_port: int = 64
    per_listener: int = 4096
    total: int = 16384

    @classmethod
    def from_open_files(cls, limit: int) -> "Caps":
        """Caps inside a process's descriptor budget (RLIMIT_NOFILE, raised at start).

        A quarter (at least 256) stays free for listeners (one per namespace),
        the feed, Nova and logs; of the rest one listener (a network or a
        router) may take a quarter and one guest a 64th (8 to 256), so one
        guest never fills its network and one network never fills the process.
        """
        total = max(64, limit - max(256, limit // 4))
        return cls(per_port=max(8, min(256, total // 64)), per_listener=max(16, total // 4), total=total)

    @classmethod
    def unlimited(cls) -> "Caps":
        """No caps (``metadata_connection_caps = false``): only the descriptor limit bounds connections."""
        return cls(per_port=sys.maxsize, per_listener=sys.maxsize, total=sys.maxsize)


# Who holds a connection: the listener, and the guest (its resolved port, or
# every caller on that listener that resolves to no port, together); and
# whether the guest was over its rate limit when it connected.
Admission = tuple[tuple[str, str], tuple[str, ...] | None, bool]


class ConnectionCaps:
    """Open connections per resolved port, per listener and in all, and the refusals.

    ``port_of`` maps (listener, caller address) to the caller's port id, or
    None: addresses a guest adds on its own (or any caller nobody can be tied
    to) share one allowance per listener, so many addresses buy nothing. The
    signed listener (a Neutron proxy in front, one address for many guests)
    is held to the listener and process caps only.

    ``limited(listener, caller, port)`` says the caller is over its request
    rate limit: its new connection is then not read for ``refusal_pause``,
    as after a 429 on a kept-alive one (see :class:`HttpProtocol`).

    The per-port and per-listener counts are ``shared``: with workers, one
    table in shared memory (:mod:`netmeta.model.metadata.conncount`), so a
    guest's cap holds across all of them. The process cap stays this
    process's own: it guards this process's descriptor table.
    """

    def __init__(self, caps: Caps | None = None,
                 port_of: Callable[[ListenerContext, str], str | None] | None = None,
                 refusals: RateLimitedLog | None = None, shared: SharedCounts | None = None,
                 limited: Callable[[ListenerContext, str, str | None], bool] | None = None) -> None:
        self.caps = caps if caps is not None else Caps()
        self.port_of = port_of
        self.limited = limited
        self.refusals = refusals if refusals is not None else RateLimitedLog(
            logging.getLogger("netmeta.metadata.refused"), burst=20, interval=10.0, what="refused connections")
        self.counts = shared if shared is not None else SharedCounts()
        self.total = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._refused_metric: dict[str, Any] = {}

    def admit(self, context: ListenerContext, peer_ip: str) -> Admission | None:
        """What to release later, or None when a cap is reached (refuse the connection)."""
        listener = (context.kind, context.id)
        guest: tuple[str, ...] | None = None
        port: str | None = None
        if context.kind != "signed":
            port = self.port_of(context, peer_ip) if self.port_of is not None else None
            guest = ("port", port) if port is not None else ("unknown", context.kind, context.id)
        caps, counts = self.caps, self.counts
        if self.total >= caps.total:
            why, limit = "process", caps.total
        elif counts.total(listener) >= caps.per_listener:
            why, limit = "listener", caps.per_listener
        elif guest is not None and counts.total(guest) >= caps.per_port:
            why, limit = guest[0], caps.per_port
        else:
            self.total += 1
            counts.add(listener, 1)
            if guest is not None:
                counts.add(guest, 1)
            metrics.connection_opened()
            slow = self.limited is not None and self.limited(context, peer_ip, port)
            return listener, guest, slow
        self.refused[why] += 1
        counter = self._refused_metric.get(why)
        if counter is None:
            counter = self._refused_metric[why] = metrics.CONNECTIONS_REFUSED.labels(why)
        counter.inc()
        self.refusals.warning("metadata: refused a connection from %s to %s %s: %s cap (%d) reached",
                              peer_ip, context.kind, context.id, why, limit, kind=why,
                              fields={"peer": peer_ip, "listener": f"{context.kind}:{context.id}", "cap": why})
        return None

    def release(self, admission: Admission) -> None:
        listener, guest, _ = admission
        self.total -= 1
        self.counts.add(listener, -1)
        if guest is not None:
            self.counts.add(guest, -1)
        metrics.connection_closed()

    def held(self, key: tuple[str, ...]) -> int:
        """Connections a listener ``(kind, id)`` or a guest (``("port", id)``) holds in every worker."""
        return self.counts.total(key)


class _DateCache:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, formatdate(now, usegmt=True).encode()
        return self.value


class Deadlines:
    """The open connections of one process, whose deadlines one periodic check enforces.

    A timer per connection (made at accept, cancelled at close) cost more
    than parsing its request; instead every ``interval`` one callback asks
    each open connection whether it is due (:meth:`HttpProtocol.check`). A
    deadline is therefore kept up to one interval late: a quarter of the
    shortest timeout, at most a second. Checking 16,000 held connections
    costs a few milliseconds per interval.
    """

    def __init__(self, limits: Limits) -> None:
        self.interval = min(1.0, min(limits.header_timeout, limits.idle_timeout) / 4)
        self.open: set["HttpProtocol"] = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, protocol: "HttpProtocol", loop: asyncio.AbstractEventLoop) -> None:
        self.open.add(protocol)
        if self.handle is None:
            self.handle = loop.call_later(self.interval, self._sweep, loop)

    def discard(self, protocol: "HttpProtocol") -> None:
        self.open.discard(protocol)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for protocol in list(self.open):  # a check may close (and so discard) its connection
            protocol.check(now)
        self.handle = loop.call_later(self.interval, self._sweep, loop) if self.open else None


class Again:
    """An answer kept to be given again: its head around the Date, its body, and the handler's :class:`Replay`."""

    __slots__ = ("replay", "response", "before", "after", "body", "keep", "head_only", "caller", "entry")

    def __init__(self, caller: tuple[str, str, str], request: Request, response: Response, replay: Replay,
                 keep: bool) -> None:
        self.replay, self.response, self.keep = replay, response, keep
        self.before, self.after = head_parts(response, keep=keep, version=request.version)
        self.head_only = request.method == "HEAD"
        self.body = b"" if self.head_only else response.body
        self.caller = caller
        self.entry = AccessEntry(*caller, request.method, request.path, response.status)


# A caller (listener kind, listener id, address) and the bytes of its whole request.
ReplayKey = tuple[tuple[str, str, str], bytes]


class Replays:
    """The answers handlers said may be given again, by caller and request bytes (see :meth:`HttpProtocol._again`).

    Bounded in entries (0: none kept) and in body bytes: when either is reached the table
    starts again empty, so requests a guest makes up cost it a slower answer,
    never the process memory. An answer no longer ``valid()`` is replaced
    the next time its request is answered.
    """

    def __init__(self, entries: int = 4096, body_bytes: int = 32 << 20) -> None:
        self.entries, self.body_bytes = entries, body_bytes
        self.known: dict[ReplayKey, Again] = {}
        self.held = 0

    def get(self, key: ReplayKey) -> Again | None:
        return self.known.get(key)

    def keep(self, key: ReplayKey, again: Again) -> None:
        size = len(again.body)
        if not self.entries:
            return  # kept nothing: every request goes to its handler
        if len(self.known) >= self.entries or self.held + size > self.body_bytes:
            self.known.clear()
            self.held = 0
        self.known[key] = again
        self.held += size

    def __len__(self) -> int:
        return len(self.known)


@dataclass
class HttpShared:
    """What every connection of one process shares: the service owns one."""

    limits: Limits = field(default_factory=Limits)
    caps: ConnectionCaps = field(default_factory=ConnectionCaps)
    access_log: AccessLog = field(default_factory=AccessLog)
    date: Callable[[], bytes] = field(default_factory=_DateCache)
    deadlines: Deadlines | None = None
    replays: Replays = field(default_factory=Replays)
    # The loop the connections run on, found once (asyncio's lookup costs a getpid each time).
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        if self.deadlines is None:
            self.deadlines = Deadlines(self.limits)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_event_loop()
        return loop


def _own_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """A socket object on the transport's descriptor, for what transports cannot do (cork, shutdown, TTL).

    One per connection: every call on uvloop's stand-in socket makes a new
    socket object (and a getsockname). It is detached, never closed, when
    the connection ends or the transport is closed: the descriptor is the
    transport's.
    """
    stand_in = transport.get_extra_info("socket")
    if stand_in is None:
        return None
    try:
        # The family as a plain int (stand_in.family makes an enum member each time).
        family = socket.AF_INET6 if len(transport.get_extra_info("peername") or ()) == 4 else socket.AF_INET
        return socket.socket(family, socket.SOCK_STREAM, 0, fileno=stand_in.fileno())
    except OSError:
        return None


# Longer reads are never answered again from memory (a request head longer than this is not memoised either).
_REPLAY_BYTES = MEMO_HEAD_BYTES + 4


def canonical_peer(peer: object) -> str:
    """The peer's address in its one spelling (an IPv4 guest on a dual-stack socket is IPv4)."""
    return canonical_ip(str(peer[0])) if isinstance(peer, tuple) and peer else ""


class HttpProtocol(asyncio.Protocol):
    """One connection: the adapter between a transport and an :class:`h1.Connection`."""

    def __init__(self, handler: Handler, context: ListenerContext, shared: HttpShared) -> None:
        self.handler = handler
        self.context = context
        self.shared = shared
        self.access_log = shared.access_log
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.worker: asyncio.Task[None] | None = None
        self.paused = False
        self.admitted: Admission | None = None
        self.loop = shared.loop
        self.corked = False
        self.sock: socket.socket | None = None
        self.resume: asyncio.TimerHandle | None = None
        self.caller: tuple[str, str, str] = (context.kind, context.id, "")

    # --- connection lifecycle ------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any stream transport (asyncio's or uvloop's) has write/close/pause_reading.
        stream: asyncio.Transport = transport  # type: ignore[assignment]
        peer_ip = canonical_peer(stream.get_extra_info("peername"))  # read by the loop at accept
        self.admitted = self.shared.caps.admit(self.context, peer_ip)
        if self.admitted is None:
            # Refused as cheaply as possible: a reset, no answer, no TIME_WAIT.
            stream.abort()
            return
        self.transport = stream
        self.caller = (self.context.kind, self.context.id, peer_ip)
        self.sock = _own_socket(transport)
        # TCP_NODELAY is already on: asyncio and uvloop set it on every TCP transport.
        now = self.loop.time()
        self.conn = conn = Connection(peer_ip, self.context, self.shared.limits, now, self.shared.date)
        if self.admitted[2]:
            # The guest is over its rate limit: its request waits, unread, as
            # after a 429. A reset instead would only make a flooding client
            # (wrk, a retry loop) reconnect at once: a storm of accepts.
            conn.hold_until = now + self.shared.limits.refusal_pause
            self._settle()
        assert self.shared.deadlines is not None
        self.shared.deadlines.add(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_socket()
        if self.admitted is not None:
            self.shared.caps.release(self.admitted)
            self.admitted = None
        if self.shared.deadlines is not None:
            self.shared.deadlines.discard(self)
        if self.resume is not None:
            self.resume.cancel()
            self.resume = None
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
        self.transport = None

    def check(self, now: float) -> None:
        """Close the connection if it is past its deadline (idle, or a request trickling in); see :class:`Deadlines`."""
        conn = self.conn
        if self.transport is None or conn is None:
            return
        if conn.expired(now):
            self._forget_socket()
            self.transport.close()

    # --- bytes in ----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self.transport is None:
            return
        now = self.loop.time()
        whole: bytes | None = None
        if len(data) <= _REPLAY_BYTES and not self.paused and conn.ready(now):
            again = self.shared.replays.get((self.caller, data))
            if again is not None and again.replay.valid():
                self._again(again, data, now)
                return
            whole = data
        try:
            interim = conn.receive(data, now)
        except Exception:  # a parser bug must not take down the listener
            LOG.exception("metadata: parser failure from %s", conn.peer_ip)
            conn.buffer.clear()
            conn.queue.append(BadRequest(400, "bad request"))
            conn.stopped = True
            interim = b""
        if interim:
            self.transport.write(interim)
            whole = None
        if whole is not None and (conn.buffer or len(conn.queue) != 1):
            whole = None  # not one whole request: nothing to answer again by these bytes
        if conn.hold_until <= now:
            self._kick(whole)
        else:  # held (see connection_made): answered when the pause is over
            self._settle()

    def _again(self, again: Again, data: bytes, now: float) -> None:
        """Answer a whole request as before, without parsing or dispatching it (see :class:`Replay`).

        What stays per request is done as on the way through the handler:
        its admission (a rate limit), a fresh body where the handler gives
        one, the handler's metrics and access log, this connection's access
        record, deadline and close.
        """
        replay, conn = again.replay, self.conn
        assert conn is not None
        started = time.perf_counter()
        refusal = replay.admit() if replay.admit is not None else None
        if refusal is not None:
            # Admitted no more (over its rate limit): this request goes the
            # usual way, with the answer the handler already decided.
            conn.receive(data, now)

            def refused(_: Request) -> Response:
                replay.record(refusal, started)
                return refusal
            self._kick(first=refused)
            return
        conn.replayed(again.keep, now)
        body = again.body if replay.fresh is None or again.head_only else replay.fresh()
        replay.record(again.response, started)
        self.access_log.again(again.caller, again.entry)
        self._write(b"".join((again.before, self.shared.date(), again.after, body)), not again.keep,
                    again.response.ttl)
        if not again.keep:
            self._close_now()

    # --- answers out ---------------------------------------------------------
    def _kick(self, whole: bytes | None = None, first: Handler | None = None) -> None:
        """Answer pending requests in order; only one needing I/O gets a task.

        Most answers need no I/O, and creating a task per request is most of
        what a small request costs in asyncio: those are written right here.
        A handler that returns an awaitable parks the queue behind one task
        until its answer is written, so pipelined answers never reorder.

        ``whole``: the queue holds one request, read whole as these bytes; if
        the handler says its answer may be given again, it is kept under
        them. ``first`` answers the first request instead of the handler.
        """
        conn = self.conn
        while conn is not None and self.transport is not None and self.worker is None:
            item = conn.next_request()
            if item is None:
                break
            if isinstance(item, BadRequest):
                self.access_log.record(self.context, conn.peer_ip, "-", "-", item.status)
                self._send(item.response())
                continue
            handler, first = first or self.handler, None
            try:
                answer = handler(item)
            except Exception:
                answer = self._internal_error(item)
            if isinstance(answer, Response):
                self._answer(item, answer)
                if whole is not None and answer.replay is not None and answer.status < 500 and answer.status != 429:
                    # keep: what respond() decided (the same bytes, read while ready, decide the same)
                    again = Again(self.caller, item, answer, answer.replay, keep=not conn.closed)
                    self.shared.replays.keep((self.caller, whole), again)
                whole = None
            else:
                self.worker = self.loop.create_task(self._finish(item, answer))
                return
        self._settle()

    async def _finish(self, request: Request, answer: Awaitable[Response]) -> None:
        try:
            try:
                response = await answer
            except asyncio.CancelledError:
                raise
            except Exception:
                response = self._internal_error(request)
            self._answer(request, response)
        finally:
            self.worker = None
        self._kick()

    def _answer(self, request: Request, response: Response) -> None:
        # Record before writing, so a client that has its answer can rely on the log.
        self.access_log.record(self.context, request.peer_ip, request.method, request.path, response.status)
        self._send(response)

    def _send(self, response: Response) -> None:
        conn, transport = self.conn, self.transport
        if conn is None or transport is None:
            return
        self._write(conn.respond(response, self.loop.time()), conn.closed, response.ttl)

    def _write(self, payload: bytes, closing: bool, ttl: int | None) -> None:
        """Write an answer: with its TTL, and corked when the connection closes after it (see :meth:`_close_now`)."""
        transport, sock = self.transport, self.sock
        if transport is None:
            return
        if sock is not None and not transport.is_closing():  # closing: the descriptor may be gone
            if ttl is not None:
                self._set_ttl(sock, ttl)
            if closing and not self.corked:
                # Held back until _close_now adds the FIN: one segment for both.
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    self.corked = True
                except OSError:
                    pass
        transport.write(payload)

    def _settle(self) -> None:
        """After a batch: close, or resume/pause reading and wait for the next request."""
        conn, transport = self.conn, self.transport
        if conn is None or transport is None:
            return
        if conn.closed:
            self._close_now()
            return
        now = self.loop.time()
        reading = conn.reading and conn.hold_until <= now
        if conn.hold_until > now and self.resume is None:
            self.resume = self.loop.call_at(conn.hold_until, self._resume)
        if reading and self.paused:
            self.paused = False
            transport.resume_reading()
        elif not reading and (not self.paused or conn.hold_until > now):
            # Also when already paused but held: uvloop starts reading after
            # connection_made, undoing a pause made there.
            self.paused = True
            transport.pause_reading()

    def _resume(self) -> None:
        self.resume = None
        self._kick()  # what arrived while held, then _settle

    def _close_now(self) -> None:
        """Send the FIN now, with the last answer if it is still in the socket.

        Whoever closes first keeps the connection in TIME_WAIT for 60 s. A
        transport's ``close()`` sends the FIN one loop iteration later, by
        which time a fast client (wrk, curl) has read the answer and closed
        first: the TIME_WAIT then sits in the *guest*, which runs out of
        ephemeral ports after ~28,000 short connections. ``shutdown`` on the
        socket itself, while the answer is still corked (see :meth:`_send`),
        puts the FIN in the answer's last segment, as haproxy does; the
        TIME_WAIT then stays on the server side, where it costs nothing.
        """
        transport, sock = self.transport, self.sock
        if transport is None:
            return
        if transport.is_closing():
            sock = None
        if sock is not None and not transport.get_write_buffer_size():
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        elif sock is not None and self.corked:
            try:  # the rest is still queued in the transport: let it flow, FIN after
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            except OSError:
                pass
        self.corked = False
        self._forget_socket()  # the transport closes the descriptor, not this object
        transport.close()

    def _forget_socket(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.detach()

    def _internal_error(self, request: Request) -> Response:
        LOG.exception("metadata: handler failed for %s %s from %s", request.method, request.path, request.peer_ip)
        return Response(500, b"Internal error; the metadata service logged the details.\n")

    def _set_ttl(self, sock: socket.socket, ttl: int) -> None:
        """Send with a given IP TTL / hop limit, and keep it for the rest of the connection.

        Never restored: the kernel builds every (re)transmitted segment's IP
        header with the TTL current at that moment, so a restore would let a
        retransmission of the token reach a client the hop limit must exclude.
        """
        peer_ip = self.conn.peer_ip if self.conn is not None else ""
        if sock.family == socket.AF_INET6 and not peer_ip.count("."):
            level, option = socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS
        else:  # IPv4, also an IPv4 guest on a dual-stack socket
            level, option = socket.IPPROTO_IP, socket.IP_TTL
        try:
            sock.setsockopt(level, option, ttl)
        except OSError:
            pass
