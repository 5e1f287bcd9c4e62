"""One HTTP/1.x server connection without I/O: bytes in, requests out; answers in, bytes out.

:class:`Connection` owns every decision a connection makes — framing, limits,
keep-alive, pipelining order, when reading should pause, when the connection
is due to time out and when it must close — and performs none of them: the
caller (the asyncio adapter in :mod:`netmeta.metadata.http`, or a test feeding
bytes) passes data and the time in and acts on what comes back. So the whole
protocol is tested as byte transcripts, without sockets or threads.

The rules:

* HTTP/1.0 and 1.1, keep-alive and pipelining (answers in request order:
  one request is *in flight* at a time, :meth:`Connection.next_request`
  gives the next only once the previous one is answered);
* bodies only with ``Content-Length`` (at most ``max_body``, else 413);
  ``Transfer-Encoding`` is refused with 400 — no guest needs chunked uploads;
* the header block is capped (431) and lines must be well formed (400); after
  a framing error the stream cannot be trusted: nothing more is parsed, and
  the connection closes after the answers already due;
* a request must arrive whole within ``header_timeout`` of its first byte
  (trickling a byte at a time does not extend it), and an idle connection is
  due to close ``idle_timeout`` after its last answer; while a request is in
  flight (its answer needs I/O) no deadline applies;
* at most ``max_pending`` parsed requests and ``max_pipeline_bytes`` unparsed
  bytes are held: beyond that :attr:`Connection.reading` turns False;
* after a ``429`` the connection is not read until :attr:`Connection.hold_until`
  (``refusal_pause`` later), so a flood over keep-alive costs nothing meanwhile.
"""

from __future__ import annotations

import collections
import functools
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable, Sequence, Union
from urllib.parse import unquote

SERVER = b"netmeta"
# Compiled once: checking characters one by one was the parser's main cost.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f]")
_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """What one connection may make the server hold, and for how long."""

    max_header_bytes: int = 8192
    max_header_lines: int = 100
    max_body: int = 64 * 1024
    max_pipeline_bytes: int = 256 * 1024
    max_pending: int = 128
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    # After a 429 the connection is not read for this long: a flooding guest's
    # keep-alive connections then cost nothing until it slows down.
    refusal_pause: float = 1.0


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
    headers: Sequence[tuple[str, str]]
    body: bytes
    peer_ip: str
    context: ListenerContext
    version: str = "HTTP/1.1"
    # The Connection header's values, joined with "," and lowercased (None: not given yet; see keep_alive).
    connection: str | None = None

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
    # The handler's word that the same request again gets this answer again (see Replay).
    replay: "Replay | None" = None


@dataclass(frozen=True)
class Replay:
    """A handler's word: the same request bytes from the same caller get this answer again, while ``valid()``.

    The adapter may then answer a repeat without parsing or dispatching it
    (:class:`netmeta.metadata.http.HttpProtocol` keeps such answers), but
    still asks the handler for what it does on every request:

    * ``admit()`` — per-request admission (a rate limit): None to answer
      again, or the answer to give instead (a 429);
    * ``fresh()`` — a new body each time (meta_data.json's random seed; its
      length never changes), or None for the same body;
    * ``record(response, started)`` — what the handler does for each answer
      it gives (metrics, the access log), ``started`` from ``perf_counter``.
    """

    valid: Callable[[], bool]
    record: Callable[["Response", float], None]
    admit: Callable[[], "Response | None"] | None = None
    fresh: Callable[[], bytes] | None = None


@dataclass(frozen=True)
class BadRequest:
    """A request that could not be parsed: answer it with :meth:`response`; the connection then closes."""

    status: int
    message: str

    def response(self) -> Response:
        return Response(self.status, self.message.encode() + b"\n")


Incoming = Union[Request, BadRequest]


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.bad = BadRequest(status, message)


def parse_head(head: bytes, max_lines: int) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Parse a request line and header lines; raise on anything odd."""
    text = head.decode("latin-1")  # decodes every byte: validation follows
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _Invalid(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise _Invalid(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/") and version[5:6].isdigit():
            raise _Invalid(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _Invalid(400, "malformed HTTP version")
    if not target or _TARGET_BAD.search(target):
        raise _Invalid(400, "malformed request target")
    if len(lines) - 1 > max_lines:
        raise _Invalid(431, "too many header lines")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.match(name):
            raise _Invalid(400, "malformed header line")
        value = value.strip(" \t")
        if _VALUE_BAD.search(value):
            raise _Invalid(400, "control character in header value")
        headers.append((name, value))
    return method, target, version, headers


def split_target(target: str) -> tuple[str, str]:
    """(decoded path, raw query) of an origin-form or absolute-form target."""
    if target.startswith("/"):
        raw_path, _, query = target.partition("?")
    elif target.lower().startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        raw_path, _, query = ("/" if slash < 0 else rest[slash:]).partition("?")
    else:
        raise _Invalid(400, "request target must be a path")
    raw_path = raw_path.partition("#")[0]
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError as exc:
        raise _Invalid(400, "path is not valid UTF-8") from exc
    if "\0" in path:
        raise _Invalid(400, "NUL in path")
    return path, query


def body_length(headers: Sequence[tuple[str, str]], max_body: int) -> int:
    lengths: set[str] = set()
    for key, value in headers:
        low = key.lower()
        if low == "transfer-encoding":
            raise _Invalid(400, "Transfer-Encoding is not supported; send Content-Length")
        if low == "content-length":
            lengths.update(v.strip() for v in value.split(","))
    if not lengths:
        return 0
    if len(lengths) != 1:
        raise _Invalid(400, "conflicting Content-Length")
    text = lengths.pop()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise _Invalid(400, "malformed Content-Length")
    if int(text) > max_body:
        raise _Invalid(413, f"request body larger than {max_body} bytes")
    return int(text)


# (method, target, version, headers, decoded path, query, body length, Connection values lowercased)
Head = tuple[str, str, str, tuple[tuple[str, str], ...], str, str, int, str]

# Heads longer than this are parsed every time: the memo stays small (4096 x
# 512 bytes) whatever a guest sends.
MEMO_HEAD_BYTES = 512


def parse_request(head: bytes, max_lines: int, max_body: int) -> Head | BadRequest:
    """A request head parsed and checked (:func:`parse_head`, target, body length), or why not.

    The same few heads arrive again and again — one per path cloud-init asks,
    byte for byte the same from every guest of an image, and every request
    of a polling agent — so short heads are memoised: the parse is a pure
    function of the bytes and the limits.
    """
    if len(head) <= MEMO_HEAD_BYTES:
        return _parse_request_memo(head, max_lines, max_body)
    return _parse_request(head, max_lines, max_body)


def _parse_request(head: bytes, max_lines: int, max_body: int) -> Head | BadRequest:
    try:
        method, target, version, headers = parse_head(head, max_lines)
        path, query = split_target(target)
        length = body_length(headers, max_body)
    except _Invalid as err:
        return err.bad
    connection = ",".join(v for k, v in headers if k.lower() == "connection").lower()
    return method, target, version, tuple(headers), path, query, length, connection


_parse_request_memo = functools.lru_cache(maxsize=4096)(_parse_request)


_STATUS_LINES = {
    code: f"HTTP/1.1 {code} {reason(code)}\r\nServer: ".encode() + SERVER for code in (200, 304, 400, 401, 403, 404, 429)
}


def render(response: Response, *, keep: bool, version: str, head_only: bool, date: bytes) -> bytes:
    """The bytes of one answer (the status line is always HTTP/1.1, RFC 9110 §6.2)."""
    before, after = head_parts(response, keep=keep, version=version)
    return b"".join((before, date, after, b"" if head_only else response.body))


def head_parts(response: Response, *, keep: bool, version: str) -> tuple[bytes, bytes]:
    """An answer's head up to its Date value, and after it to the blank line: the head is ``before + date + after``."""
    status = _STATUS_LINES.get(response.status)
    if status is None:
        status = f"HTTP/1.1 {response.status} {reason(response.status)}\r\nServer: ".encode() + SERVER
    connection = b"" if keep and version != "HTTP/1.0" else (
        b"\r\nConnection: keep-alive" if keep else b"\r\nConnection: close")
    if response.headers:
        middle = _middle(response.content_type)
        tail = connection + b"".join(
            f"\r\n{name}: {value}".encode("latin-1", "replace") for name, value in response.headers) + b"\r\n\r\n"
    else:
        # The same few heads every time: their fixed parts are made once.
        key = (response.content_type, connection)
        parts = _HEAD_PARTS.get(key)
        if parts is None:
            if len(_HEAD_PARTS) > 64:
                _HEAD_PARTS.clear()
            parts = _HEAD_PARTS[key] = (_middle(response.content_type), connection + b"\r\n\r\n")
        middle, tail = parts
    return status + b"\r\nDate: ", middle + str(len(response.body)).encode() + tail


def _middle(content_type: str) -> bytes:
    return b"\r\nContent-Type: " + content_type.encode("latin-1", "replace") + b"\r\nContent-Length: "


# (content type, Connection line) -> the bytes after Date up to the length, and after it
_HEAD_PARTS: dict[tuple[str, bytes], tuple[bytes, bytes]] = {}


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Connection:
    """The state of one server connection; see the module docstring for its rules.

    The caller's loop: :meth:`receive` bytes (write what it returns: a
    ``100 Continue``), take requests with :meth:`next_request` and give each
    answer to :meth:`respond` (write what it returns); after each step honour
    :attr:`reading` (pause/resume), :attr:`closed` (close once written) and
    :attr:`deadline` (call :meth:`expired` then).
    """

    def __init__(self, peer_ip: str, context: ListenerContext, limits: Limits, now: float,
                 date: Callable[[], bytes]) -> None:
        self.peer_ip = peer_ip
        self.context = context
        self.limits = limits
        self.date = date
        self.buffer = bytearray()
        self.queue: collections.deque[Incoming] = collections.deque()
        self.in_flight: Incoming | None = None
        # No more requests will be read: after a framing error or "Connection: close".
        self.stopped = False
        # Nothing more will be written: the caller closes once it has sent the last bytes.
        self.closed = False
        self.continue_sent = False
        # Complete requests may wait in the buffer: max_pending was reached.
        self.held = False
        # The request now arriving already has its deadline (from its first byte).
        self.started = True
        self.deadline: float | None = now + limits.header_timeout
        # Not read before this time (after a 429).
        self.hold_until = 0.0

    # --- bytes in --------------------------------------------------------
    def receive(self, data: bytes, now: float) -> bytes:
        """Take bytes from the peer; returns bytes to send at once (``100 Continue``) or b""."""
        if self.stopped or self.closed:
            return b""
        if not self.buffer and self._one_request(data):
            self._update_deadline(now)
            return b""
        self.buffer += data
        out = self._parse()
        self._update_deadline(now)
        return out

    def _one_request(self, data: bytes) -> bool:
        """Queue ``data`` at once if it is exactly one whole request without a body (nearly every read).

        What :meth:`_parse` would do with it, without copying it through the
        buffer; anything else (a body, part of a request, several, an error)
        is left to :meth:`_parse`.
        """
        end = len(data) - 4
        if (end > self.limits.max_header_bytes or not data.endswith(b"\r\n\r\n") or data.find(b"\r\n\r\n") != end
                or b"\n\n" in data or len(self.queue) >= self.limits.max_pending):
            return False
        parsed = parse_request(data[:end].lstrip(b"\r\n"), self.limits.max_header_lines, self.limits.max_body)
        if isinstance(parsed, BadRequest) or parsed[6]:
            return False
        method, target, version, headers, path, query, _, connection = parsed
        self.held = False
        self.continue_sent = False
        self.started = False
        self.queue.append(Request(method, target, path, query, headers, b"", self.peer_ip, self.context, version,
                                  connection))
        return True

    def _parse(self) -> bytes:
        limits = self.limits
        self.held = False
        while self.buffer and not self.stopped:
            if len(self.queue) >= limits.max_pending:
                self.held = True  # parsed again as answers make room
                return b""
            end = self.buffer.find(b"\r\n\r\n")
            sep = 4
            lf = self.buffer.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, sep = lf, 2
            if end < 0:
                # Incomplete: wait for more (a stray CRLF between requests is
                # tolerated, RFC 9112 §2.2: lstrip below drops it).
                if len(self.buffer) > limits.max_header_bytes:
                    self._fail(BadRequest(431, "request header block too large"))
                return b""
            if end > limits.max_header_bytes:
                self._fail(BadRequest(431, "request header block too large"))
                return b""
            head = bytes(self.buffer[:end]).lstrip(b"\r\n")
            parsed = parse_request(head, limits.max_header_lines, limits.max_body)
            if isinstance(parsed, BadRequest):
                self._fail(parsed)
                return b""
            method, target, version, headers, path, query, length, connection = parsed
            start = end + sep
            if len(self.buffer) - start < length:
                if length and not self.continue_sent and version == "HTTP/1.1":
                    expect = [v for k, v in headers if k.lower() == "expect"]
                    if expect and expect[0].lower() == "100-continue":
                        self.continue_sent = True
                        return CONTINUE
                return b""
            body = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            self.continue_sent = False
            self.started = False  # what follows is a new request
            self.queue.append(Request(method, target, path, query, headers, body, self.peer_ip, self.context, version,
                                      connection))
        return b""

    def _fail(self, bad: BadRequest) -> None:
        self.queue.append(bad)
        self.buffer.clear()
        self.stopped = True  # after a framing error the stream cannot be trusted

    # --- requests out, answers in ----------------------------------------
    def next_request(self) -> Incoming | None:
        """The next request to answer, once the previous one is answered; else None."""
        if self.in_flight is not None or self.closed or not self.queue:
            return None
        self.in_flight = self.queue.popleft()
        self.deadline = None  # its answer is on the way
        return self.in_flight

    def respond(self, response: Response, now: float) -> bytes:
        """The bytes answering the request in flight; decides whether the connection stays open."""
        request = self.in_flight
        if request is None or self.closed:
            return b""
        self.in_flight = None
        if isinstance(request, BadRequest):
            keep, version, head_only = False, "HTTP/1.1", False
        else:
            keep = self._keep_alive(request)
            version, head_only = request.version, request.method == "HEAD"
        if not keep:
            # Nothing is answered after "Connection: close".
            self.stopped = self.closed = True
            self.queue.clear()
            self.buffer.clear()
            self.deadline = None
        else:
            if response.status == 429:
                self.hold_until = now + self.limits.refusal_pause
            if self.held:
                self._parse()
            self._update_deadline(now)
        return render(response, keep=keep, version=version, head_only=head_only, date=self.date())

    def _keep_alive(self, request: Request) -> bool:
        if self.stopped:
            return False
        conn = request.connection
        if conn is None:  # a Request made elsewhere (tests)
            conn = ",".join(request.header_all("Connection")).lower()
        if request.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def ready(self, now: float) -> bool:
        """Whether a whole request read now would be answered at once: nothing buffered, queued or in flight, not held."""
        return (not self.buffer and not self.queue and self.in_flight is None and not self.stopped
                and not self.closed and self.hold_until <= now)

    def replayed(self, keep: bool, now: float) -> None:
        """A whole request read while :meth:`ready` was answered as before (see :class:`Replay`).

        The state :meth:`receive`, :meth:`next_request` and :meth:`respond`
        would leave: ``keep`` is what :meth:`respond` decided for the same
        request (it depends only on its bytes while ready).
        """
        self.continue_sent = False
        if keep:
            self.started = False
            self.deadline = now + self.limits.idle_timeout
        else:
            self.stopped = self.closed = True
            self.deadline = None

    # --- flow control and time -------------------------------------------
    @property
    def reading(self) -> bool:
        """Whether the caller should read more from the peer now."""
        if self.stopped or self.closed:
            return False
        return len(self.buffer) <= self.limits.max_pipeline_bytes and len(self.queue) < self.limits.max_pending

    def _update_deadline(self, now: float) -> None:
        if self.closed or self.in_flight is not None or self.queue:
            return
        if not self.buffer:
            self.started = False
            self.deadline = now + self.limits.idle_timeout
        elif not self.started:
            # The first bytes of a request: it is due whole by header_timeout.
            # Later chunks of the same request never move this deadline.
            self.started = True
            self.deadline = now + self.limits.header_timeout

    def expired(self, now: float) -> bool:
        """True when the connection should be closed now (idle or trickling past its deadline)."""
        if self.closed or self.deadline is None or now < self.deadline:
            return False
        self.closed = self.stopped = True
        self.deadline = None
        return True
