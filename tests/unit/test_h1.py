"""Byte transcripts of the sans-I/O HTTP connection: what goes in, what comes out, and when.

No sockets, no loop: the time is a number passed in, the Date header a constant.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmeta.metadata.h1 import BadRequest, Connection, Limits, ListenerContext, Request, Response

CTX = ListenerContext("network", "net-1")
DATE = b"Tue, 01 Dec 2026 21:00:00 GMT"


def connect(limits: Limits | None = None, now: float = 0.0) -> Connection:
    return Connection("10.0.0.5", CTX, limits or Limits(), now, lambda: DATE)


def ok(body: bytes = b"hi", **extra: str) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Server: netmeta", b"Date: " + DATE, b"Content-Type: text/plain; charset=UTF-8",
             b"Content-Length: " + str(len(body)).encode()]
    lines += [f"{k.replace('_', '-')}: {v}".encode() for k, v in extra.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answer_all(conn: Connection, now: float = 0.0) -> tuple[list[Request | BadRequest], bytes]:
    """Answer every request the connection gives out, as a handler would; (requests, bytes written)."""
    seen: list[Request | BadRequest] = []
    out = b""
    while (item := conn.next_request()) is not None:
        seen.append(item)
        out += conn.respond(item.response() if isinstance(item, BadRequest) else Response(200, b"hi"), now)
    return seen, out


def test_one_request_one_answer_and_the_connection_stays_open() -> None:
    conn = connect()
    assert conn.receive(b"GET /openstack?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 1.0) == b""
    seen, out = answer_all(conn, 1.0)
    assert [(r.method, r.path, r.query, r.headers, r.peer_ip, r.context) for r in seen if isinstance(r, Request)] == [
        ("GET", "/openstack", "x=1", (("Host", "a"),), "10.0.0.5", CTX)]
    assert out == ok()
    assert not conn.closed and conn.reading
    assert conn.deadline == 1.0 + Limits().idle_timeout


def test_connection_close_ends_the_connection_and_drops_what_follows() -> None:
    conn = connect()
    conn.receive(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0)
    seen, out = answer_all(conn)
    assert [r.path for r in seen if isinstance(r, Request)] == ["/a"]
    assert out == ok(Connection="close")
    assert conn.closed and not conn.reading and conn.deadline is None
    assert conn.receive(b"GET /c HTTP/1.1\r\n\r\n", 0) == b"" and conn.next_request() is None


@pytest.mark.parametrize(("head", "keep", "marker"), [
    (b"GET / HTTP/1.0\r\n\r\n", False, b"Connection: close"),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, b"Connection: keep-alive"),
    (b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n", False, b"Connection: close"),
])
def test_keep_alive_by_version_and_header(head: bytes, keep: bool, marker: bytes) -> None:
    conn = connect()
    conn.receive(head, 0)
    _, out = answer_all(conn)
    assert marker in out and conn.closed is not keep


def test_pipelined_requests_are_given_out_one_at_a_time_in_order() -> None:
    conn = connect()
    conn.receive(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n", 0)
    first = conn.next_request()
    assert isinstance(first, Request) and first.path == "/1"
    assert conn.next_request() is None  # /1 is still in flight: answers never reorder
    assert conn.deadline is None  # no deadline while an answer is on its way
    conn.respond(Response(200), 5)
    seen, _ = answer_all(conn, 5)
    assert [r.path for r in seen if isinstance(r, Request)] == ["/2", "/3"]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8))
def test_any_split_of_the_bytes_gives_the_same_requests(cuts: list[int]) -> None:
    data = (b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /latest/meta-data/ HTTP/1.1\r\nX-A: b\r\n\r\n")
    conn = connect()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:]):
        conn.receive(data[start:end], 0)
    seen, _ = answer_all(conn)
    assert [(r.method, r.path, r.body) for r in seen if isinstance(r, Request)] == [
        ("POST", "/openstack/latest/password", b"hello"), ("GET", "/latest/meta-data/", b"")]


def test_lf_only_lines_and_a_stray_crlf_between_requests() -> None:
    conn = connect()
    conn.receive(b"GET /a HTTP/1.1\nHost: x\n\n\r\nGET /b HTTP/1.1\r\n\r\n", 0)
    seen, _ = answer_all(conn)
    assert [r.path for r in seen if isinstance(r, Request)] == ["/a", "/b"]


def test_expect_100_continue_is_answered_once_before_the_body() -> None:
    conn = connect()
    assert conn.receive(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 0) == (
        b"HTTP/1.1 100 Continue\r\n\r\n")
    assert conn.receive(b"a", 0) == b""
    assert conn.receive(b"bc", 0) == b""
    item = conn.next_request()
    assert isinstance(item, Request) and item.body == b"abc"


def test_head_gets_the_length_but_no_body() -> None:
    conn = connect()
    conn.receive(b"HEAD / HTTP/1.1\r\n\r\n", 0)
    conn.next_request()
    assert conn.respond(Response(200, b"hello"), 0) == ok(b"hello")[: -len(b"hello")]


@pytest.mark.parametrize(("data", "status", "reason"), [
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, b"Transfer-Encoding is not supported"),
    (b"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, b"conflicting Content-Length"),
    (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, b"malformed Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413, b"larger than 65536"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, b"only HTTP/1.0 and HTTP/1.1"),
    (b"GET / FTP/1.0\r\n\r\n", 400, b"malformed HTTP version"),
    (b"GET /\r\n\r\n", 400, b"malformed request line"),
    (b"G(T / HTTP/1.1\r\n\r\n", 400, b"malformed method"),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, b"malformed header line"),
    (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400, b"control character"),
    (b"GET * HTTP/1.1\r\n\r\n", 400, b"must be a path"),
    (b"GET /%ff HTTP/1.1\r\n\r\n", 400, b"not valid UTF-8"),
    (b"GET /a%00 HTTP/1.1\r\n\r\n", 400, b"NUL in path"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, b"too many header lines"),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 9000, 431, b"header block too large"),
])
def test_a_framing_error_is_answered_then_the_connection_closes(data: bytes, status: int, reason: bytes) -> None:
    conn = connect()
    conn.receive(data, 0)
    seen, out = answer_all(conn)
    assert seen and isinstance(seen[-1], BadRequest) and seen[-1].status == status
    assert out.startswith(f"HTTP/1.1 {status} ".encode()) and reason in out and b"Connection: close" in out
    assert conn.closed and not conn.reading


def test_a_good_request_before_garbage_is_answered_and_closes() -> None:
    conn = connect()
    conn.receive(b"GET /a HTTP/1.1\r\n\r\nBROKEN\r\n\r\n", 0)
    seen, out = answer_all(conn)
    assert [type(r) for r in seen] == [Request]
    assert out == ok(Connection="close") and conn.closed


def test_a_trickled_request_keeps_the_deadline_of_its_first_byte() -> None:
    limits = Limits(header_timeout=10, idle_timeout=30)
    conn = connect(limits, now=100)
    assert conn.deadline == 110  # the first request is due from the connect
    conn.receive(b"GET /a HTTP/1.1\r\n\r\n", 101)
    answer_all(conn, 101)
    assert conn.deadline == 131  # idle after an answer
    for t, byte in enumerate(b"GET /b HT"):
        conn.receive(bytes([byte]), 105 + t)  # never idle for long, never finished
    assert conn.deadline == 115
    assert not conn.expired(114.9)
    assert conn.expired(115) and conn.closed
    assert conn.receive(b"TP/1.1\r\n\r\n", 116) == b"" and conn.next_request() is None


def test_an_idle_connection_expires_but_not_while_an_answer_is_on_its_way() -> None:
    conn = connect(Limits(idle_timeout=30), now=0)
    conn.receive(b"GET / HTTP/1.1\r\n\r\n", 1)
    conn.next_request()
    assert not conn.expired(1000)  # a slow backend is not the guest's fault
    conn.respond(Response(200), 1000)
    assert conn.deadline == 1030 and not conn.expired(1029) and conn.expired(1030)


def test_reading_pauses_at_max_pending_and_resumes_as_answers_go_out() -> None:
    conn = connect(Limits(max_pending=2))
    conn.receive(b"GET /1 HTTP/1.1\r\n\r\n" * 5, 0)
    assert len(conn.queue) == 2 and not conn.reading
    seen, _ = answer_all(conn)
    assert [r.path for r in seen if isinstance(r, Request)] == ["/1"] * 5  # the rest parsed as room freed
    assert conn.reading


def test_reading_pauses_when_unparsed_bytes_pass_the_pipeline_limit() -> None:
    conn = connect(Limits(max_pipeline_bytes=100, max_pending=1))
    conn.receive(b"GET /1 HTTP/1.1\r\n\r\n" * 8, 0)
    assert not conn.reading
    answer_all(conn)
    assert conn.reading and not conn.buffer


def test_answers_carry_their_headers_and_content_type() -> None:
    conn = connect()
    conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0)
    conn.next_request()
    out = conn.respond(Response(429, b"slow down\n", "text/plain", [("Retry-After", "3")]), 0)
    assert out == (b"HTTP/1.1 429 Too Many Requests\r\nServer: netmeta\r\nDate: " + DATE +
                   b"\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nRetry-After: 3\r\n\r\nslow down\n")


def test_a_refused_request_holds_the_connection_back_for_a_while() -> None:
    conn = connect(Limits(refusal_pause=1.5))
    conn.receive(b"GET / HTTP/1.1\r\n\r\n", 10)
    conn.next_request()
    conn.respond(Response(429, b"slow down\n", headers=[("Retry-After", "1")]), 10)
    assert conn.hold_until == 11.5 and not conn.closed
    conn.receive(b"GET / HTTP/1.1\r\n\r\n", 10)
    conn.next_request()
    conn.respond(Response(200), 12)
    assert conn.hold_until == 11.5  # an answer that is not a refusal holds nothing back


class _BufferedOnly(Connection):
    """The same connection without the one-whole-request shortcut: every read goes through the buffer."""

    def _one_request(self, data: bytes) -> bool:
        return False


PIECES = [
    b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    b"\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /b HTTP/1.1\nHost: x\n\n",
    b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /%ff HTTP/1.1\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n",
    b"\r\n\r\n",
    b"GET /d HTTP/1.1\r\n",
]


@settings(max_examples=150, deadline=None)
@given(reads=st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=3), min_size=1, max_size=5))
def test_whole_requests_read_at_once_are_queued_as_the_buffer_would(reads: list[list[bytes]]) -> None:
    fast, slow = connect(), _BufferedOnly("10.0.0.5", CTX, Limits(), 0.0, lambda: DATE)
    outputs = []
    for conn in (fast, slow):
        seen: list[Request | BadRequest] = []
        out = b""
        for now, pieces in enumerate(reads):
            out += conn.receive(b"".join(pieces), float(now))
            more, written = answer_all(conn, float(now))
            seen += more
            out += written
        outputs.append(([(type(r).__name__, vars(r)) for r in seen], out, conn.stopped, conn.closed, conn.deadline,
                        bytes(conn.buffer)))
    assert outputs[0] == outputs[1]
