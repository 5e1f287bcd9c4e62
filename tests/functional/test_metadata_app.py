"""The metadata server end to end on 127.0.0.1, driven by real clients.

A :class:`LiveServer` runs :class:`HttpProtocol` + :class:`MetadataApp` on
its own event loop in a thread, so blocking clients — raw sockets,
``http.client``, botocore, cloud-init's readers — talk to it exactly as a
guest would. The fake snapshot puts guest vm1 at 127.0.0.1 on NET_A (and a
different guest, vm2, at the same address on NET_B), so loopback is a guest
and the listener context decides whose data is served.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from netmeta.config import Config
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import SIGNED, Caps, ConnectionCaps, HttpProtocol, HttpShared, Limits, ListenerContext
from tests.builders import NET_A, NET_B, PUBKEY, USER_DATA, VM1, VM2, MemoryPasswords, metadata_cloud


class LiveServer:
    """One or more listeners for one app, on a private loop in a thread."""

    def __init__(self, config: Config, contexts: list[ListenerContext], extra: Callable[[], Any] | None = None,
                 shared: HttpShared | None = None) -> None:
        self.config = config
        self.contexts = contexts
        self.shared = shared if shared is not None else HttpShared()
        self.log = self.shared.access_log
        self.ports: dict[ListenerContext, int] = {}
        self.passwords = MemoryPasswords()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.extra = extra
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        snap = metadata_cloud()
        self.app = MetadataApp(self.config, lambda: snap, self.passwords)
        self.servers = []
        for ctx in self.contexts:
            server = await self.loop.create_server(
                lambda ctx=ctx: HttpProtocol(self.app.dispatch, ctx, self.shared), "127.0.0.1", 0
            )
            self.servers.append(server)
            self.ports[ctx] = server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return self.ports[self.contexts[0]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def _stop() -> None:
            for server in self.servers:
                server.close()
                await server.wait_closed()
            await self.app.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


NET_A_CTX = ListenerContext("network", NET_A)
NET_B_CTX = ListenerContext("network", NET_B)


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer(Config(metadata_proxy_shared_secret="s3cret"), [NET_A_CTX, NET_B_CTX])
    yield server
    server.stop()


@pytest.fixture
def live_required() -> Iterator[LiveServer]:
    server = LiveServer(Config(imds_tokens="required"), [NET_A_CTX])
    yield server
    server.stop()


@pytest.fixture
def live_off() -> Iterator[LiveServer]:
    server = LiveServer(Config(imds_tokens="off"), [NET_A_CTX])
    yield server
    server.stop()


# --- a tiny raw HTTP client, to control every byte ---------------------------


def raw(port: int, payload: bytes, responses: int = 1, timeout: float = 5) -> list[tuple[int, dict[str, str], bytes]]:
    """Send bytes, read ``responses`` answers (status, lower-case headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_responses(sock, responses)


def read_responses(sock: socket.socket, count: int, heads: tuple[int, ...] = ()) -> list[tuple[int, dict[str, str], bytes]]:
    """Read answers; ``heads`` are the indexes of HEAD requests (no body sent)."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = 0 if len(out) in heads or status == 100 else int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    return out


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --- serving ------------------------------------------------------------------


def test_serves_both_trees_with_nova_content_types(live: LiveServer) -> None:
    status, headers, body = get(live.port, "/openstack/latest/meta_data.json")
    assert status == 200 and headers["content-type"] == "application/json"
    md = json.loads(body)
    assert md["uuid"] == VM1 and md["hostname"] == "vm1.novalocal"
    assert headers["server"] == "netmeta" and "date" in headers
    status, headers, body = get(live.port, "/latest/meta-data/public-keys/0/openssh-key")
    assert (status, body) == (200, PUBKEY.encode())
    assert headers["content-type"] == "text/plain; charset=UTF-8"
    assert get(live.port, "/openstack/latest/user_data")[2] == USER_DATA


def test_listener_context_decides_whose_data(live: LiveServer) -> None:
    live.log.clear()
    assert get(live.ports[NET_A_CTX], "/latest/meta-data/instance-id")[2] == b"i-1b2c3d4e"
    assert get(live.ports[NET_B_CTX], "/latest/meta-data/instance-id")[2] == b"i-2b2c3d4e"
    assert json.loads(get(live.ports[NET_B_CTX], "/openstack/latest/meta_data.json")[2])["uuid"] == VM2
    assert live.log.count("network", NET_A, "127.0.0.1") == 1
    assert live.log.count("network", NET_B, "127.0.0.1") == 2
    assert [e.path for e in live.log.recent][-1] == "/openstack/latest/meta_data.json"


def test_keep_alive_and_pipelining_answer_in_order(live: LiveServer) -> None:
    paths = ["/latest/meta-data/hostname", "/openstack", "/nope", "/latest/meta-data/local-ipv4"]
    payload = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
    answers = raw(live.port, payload, responses=4)
    assert [a[0] for a in answers] == [200, 200, 404, 200]
    assert answers[0][2] == b"vm1.novalocal" and answers[3][2] == b"127.0.0.1"
    assert all(a[1].get("connection") != "close" for a in answers)


def test_http10_closes_unless_keep_alive(live: LiveServer) -> None:
    [(status, headers, _)] = raw(live.port, b"GET /latest HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    answers = raw(live.port, b"GET /latest HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2, responses=2)
    assert [a[1]["connection"] for a in answers] == ["keep-alive", "keep-alive"]


def test_head_has_length_but_no_body(live: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"HEAD /latest/meta-data/hostname HTTP/1.1\r\n\r\nGET /latest/meta-data/hostname HTTP/1.1\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"vm1.novalocal"):
            data += sock.recv(4096)
    first, second = data.split(b"HTTP/1.1 200")[1:]
    assert b"Content-Length: 13" in first and first.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "payload, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
        (b"GET /%ff HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_an_answer_and_a_close(live: LiveServer, payload: bytes, status: int) -> None:
    [(got, headers, body)] = raw(live.port, payload)
    assert got == status and headers["connection"] == "close" and body


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/openstack/latest/meta_data.json", 405),
        ("DELETE", "/latest/meta-data/", 405),
        ("PUT", "/openstack/latest/password", 400),
        ("GET", "/openstack/2099-01-01/meta_data.json", 404),
        ("GET", "/1999-01-01/meta-data/", 404),
        ("GET", "/latest/meta-data/nothing", 404),
        ("GET", "/latest/api/token", 405),
    ],
)
def test_method_and_path_errors(live: LiveServer, method: str, path: str, status: int) -> None:
    got, _, body = get(live.port, path, method=method)
    assert got == status and body.strip()


def test_unknown_guest_gets_a_404_that_says_why(live: LiveServer) -> None:
    server = LiveServer(Config(), [ListenerContext("network", "no-such-net")])
    try:
        status, _, body = get(server.port, "/openstack/latest/meta_data.json")
        assert status == 404 and b"network no-such-net does not exist" in body
        assert get(server.port, "/")[0] == 200  # "/" needs no instance
    finally:
        server.stop()


def test_password_get_post_conflict_and_size(live: LiveServer) -> None:
    assert get(live.port, "/openstack/latest/password")[:3:2] == (200, b"")
    assert get(live.port, "/openstack/latest/password", method="POST", body=b"x" * 1021)[0] == 400
    assert get(live.port, "/openstack/latest/password", method="POST", body=b"secret-pw")[0] == 200
    assert get(live.port, "/openstack/latest/password")[2] == b"secret-pw"
    assert get(live.port, "/openstack/latest/password", method="POST", body=b"again")[0] == 409
    assert live.passwords.values[VM1] == "secret-pw"
    # Expect: 100-continue is honoured for a body sent after the go-ahead.
    with socket.create_connection(("127.0.0.1", live.ports[NET_B_CTX]), timeout=5) as sock:
        sock.sendall(b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"pw2")
        assert read_responses(sock, 1)[0][0] == 200


# --- IMDSv2 tokens --------------------------------------------------------------


def _token(port: int, ttl: str = "60", extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _, body = get(port, "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl, **(extra or {})}, "PUT")
    return status, body


def test_tokens_required(live_required: LiveServer) -> None:
    port = live_required.port
    assert get(port, "/latest/meta-data/instance-id")[0] == 401
    status, token = _token(port)
    assert status == 200 and token
    assert get(port, "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token.decode()})[2] == b"i-1b2c3d4e"
    assert get(port, "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "forged"})[0] == 401
    assert get(port, "/openstack/latest/meta_data.json")[0] == 200  # OpenStack clients send no tokens
    for ttl in ("0", "21601", "abc", "-5"):
        assert _token(port, ttl)[0] == 400
    assert _token(port, extra={"X-Forwarded-For": "10.0.0.9"})[0] == 403


def _connected_socket() -> tuple[socket.socket, socket.socket]:
    """Both ends of a real loopback TCP connection (the server's end first)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


class _FakeTransport(asyncio.Transport):
    """Writes nothing: records each answer with the socket's IP TTL at the moment it is written."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.written: list[tuple[int, bytes]] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append((self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL), bytes(data)))

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


async def test_token_response_sets_the_hop_limit_for_the_rest_of_the_connection() -> None:
    # Not restored: a TCP retransmission of the token would go with a restored TTL.
    snap = metadata_cloud()
    app = MetadataApp(Config(imds_token_hop_limit=1), lambda: snap, MemoryPasswords())
    proto = HttpProtocol(app.handle, NET_A_CTX, HttpShared())
    sock, client = _connected_socket()
    transport = _FakeTransport(sock)
    try:
        proto.connection_made(transport)
        proto.data_received(b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 9\r\n\r\n")
        proto.data_received(b"GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n")
        while proto.worker is not None or (proto.conn is not None and proto.conn.queue):
            await asyncio.sleep(0.01)
        proto.connection_lost(None)
        assert [ttl for ttl, _ in transport.written] == [1, 1]
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 1  # and after the connection's end
        assert b"X-aws-ec2-metadata-token-ttl-seconds: 9" in transport.written[0][1]
    finally:
        sock.close()
        client.close()


def test_optional_tokens_reject_only_bad_ones(live: LiveServer) -> None:
    assert get(live.port, "/latest/meta-data/instance-id")[0] == 200
    assert get(live.port, "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "bad"})[0] == 401
    # A token is bound to its listener: NET_A's token is refused on NET_B.
    _, token = _token(live.ports[NET_A_CTX])
    assert get(live.ports[NET_B_CTX], "/latest/meta-data/", {"X-aws-ec2-metadata-token": token.decode()})[0] == 401


def test_botocore_region_fetcher_uses_tokens(live_required: LiveServer, live_off: LiveServer) -> None:
    from botocore.utils import InstanceMetadataRegionFetcher

    for server in (live_required, live_off):
        server.log.clear()
        fetcher = InstanceMetadataRegionFetcher(timeout=2, num_attempts=1, base_url=server.url)
        # botocore derives the region by dropping the zone's last letter.
        assert fetcher.retrieve_region() == "nov"
        puts = [e for e in server.log.recent if e.method == "PUT"]
        assert [e.status for e in puts] == ([200] if server is live_required else [404])


# --- cloud-init's own readers ---------------------------------------------------


@pytest.fixture(scope="session")
def cloudinit_path() -> Iterator[str]:
    """Debian's cloud-init package, unpacked (never installed), on sys.path for the session."""
    import sys

    from tests.cloudinit import cloudinit_dist_packages

    with cloudinit_dist_packages() as path:
        sys.path.insert(0, path)
        try:
            yield path
        finally:
            sys.path.remove(path)


def test_cloud_init_openstack_reader(live: LiveServer, cloudinit_path: str) -> None:
    from cloudinit.sources.helpers import ec2 as ci_ec2
    from cloudinit.sources.helpers import openstack as ci_openstack

    class Reader(ci_openstack.MetadataReader):  # type: ignore[misc]
        # cloud-init hard-codes 169.254.169.254 for its EC2 crawl; on this host
        # that is the provider's service, so point it at the test server.
        def _read_ec2_metadata(self) -> Any:
            return ci_ec2.get_instance_metadata(metadata_address=live.url, timeout=2, retries=0)

    result = Reader(live.url, timeout=2, retries=0).read_v2()
    md = result["metadata"]
    assert md["uuid"] == VM1 and md["instance-id"] == VM1
    assert md["hostname"] == "vm1.novalocal" and md["local-hostname"] == "vm1.novalocal"
    assert md["public_keys"] == {"mykey": PUBKEY}
    assert result["userdata"] == USER_DATA
    assert result["vendordata"] == {}
    net = result["networkdata"]
    assert {link["ethernet_mac_address"] for link in net["links"]} >= {"fa:16:3e:00:00:01"}
    ec2_md = result["ec2-metadata"]
    assert ec2_md["instance-id"] == "i-1b2c3d4e" and ec2_md["public-keys"] == {"mykey": PUBKEY}
    assert ec2_md["placement"] == {"availability-zone": "nova"}
    config = ci_openstack.convert_net_json(net, known_macs={"fa:16:3e:00:00:01": "eth0", "fa:16:3e:00:00:11": "eth1", "fa:16:3e:00:00:13": "eth2"})
    assert config["version"] == 1 and any(c.get("name") == "eth0" for c in config["config"])


def test_default_rate_limit_never_meets_a_boot(live: LiveServer, cloudinit_path: str) -> None:
    """cloud-init reads the OpenStack tree and crawls EC2 twice per boot, back to back.

    One 429 anywhere makes it drop the whole crawl (and a real VM falls back to
    DataSourceNone), so the default limit must leave all of it alone.
    """
    from cloudinit.sources.helpers import ec2 as ci_ec2
    from cloudinit.sources.helpers import openstack as ci_openstack

    assert live.config.rate_limiting.rate_limit_enabled

    class Reader(ci_openstack.MetadataReader):  # type: ignore[misc]
        def _read_ec2_metadata(self) -> Any:
            return ci_ec2.get_instance_metadata(metadata_address=live.url, timeout=2, retries=0)

    for _ in range(2):
        result = Reader(live.url, timeout=2, retries=0).read_v2()
        assert result["ec2-metadata"]["instance-id"] == "i-1b2c3d4e"
    statuses = [e.status for e in live.log.recent]
    assert len(statuses) > 100 and 429 not in statuses


def test_cloud_init_ec2_crawl_every_version(live: LiveServer, cloudinit_path: str) -> None:
    from cloudinit.sources.helpers import ec2 as ci_ec2

    for version in ("2009-04-04", "2007-01-19", "1.0", "latest"):
        md = ci_ec2.get_instance_metadata(api_version=version, metadata_address=live.url, timeout=2, retries=0)
        assert md["instance-id"] == "i-1b2c3d4e", version
        assert md["local-ipv4"] == "127.0.0.1"
    ud = ci_ec2.get_instance_userdata(api_version="2009-04-04", metadata_address=live.url, timeout=2, retries=0)
    assert ud == USER_DATA


# --- Nova, both directions ---------------------------------------------------------


@pytest.fixture
def fake_nova() -> Iterator[dict[str, Any]]:
    """A real aiohttp server on 127.0.0.1 standing in for Nova's metadata API."""
    from aiohttp import web

    seen: dict[str, Any] = {"requests": []}
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def handler(request: web.Request) -> web.Response:
        seen["requests"].append((request.method, request.path_qs, list(request.headers.items()), await request.read()))
        if request.path == "/boom":
            return web.Response(status=500, text="nova broke")
        return web.Response(status=200, body=b'{"from": "nova"}', content_type="application/json")

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        seen["runner"] = runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        seen["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    yield seen
    asyncio.run_coroutine_threadsafe(seen["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_forwards_to_nova_with_signed_headers(fake_nova: dict[str, Any]) -> None:
    from netmeta.model.metadata.signing import sign

    config = Config(metadata_backend="nova", nova_metadata_port=fake_nova["port"], metadata_proxy_shared_secret="s3cret")
    server = LiveServer(config, [NET_A_CTX])
    try:
        spoof = {"X-Instance-ID": VM2, "X-Tenant-ID": "proj-2", "X-Forwarded-For": "6.6.6.6", "X-Instance-ID-Signature": "f00"}
        status, headers, body = get(server.port, "/openstack/latest/meta_data.json?x=1", spoof)
        assert (status, body, headers["content-type"]) == (200, b'{"from": "nova"}', "application/json")
        method, path_qs, sent, _ = fake_nova["requests"][-1]
        assert (method, path_qs) == ("GET", "/openstack/latest/meta_data.json?x=1")
        values = lambda name: [v for k, v in sent if k.lower() == name.lower()]  # noqa: E731
        assert values("X-Instance-ID") == [VM1]
        assert values("X-Tenant-ID") == ["proj-1"]
        assert values("X-Forwarded-For") == ["127.0.0.1"]
        assert values("X-Instance-ID-Signature") == [sign("s3cret", VM1)]
        assert get(server.port, "/openstack/latest/password", method="POST", body=b"pw")[0] == 200
        assert fake_nova["requests"][-1][3] == b"pw"
        assert get(server.port, "/boom")[0] == 500
    finally:
        server.stop()
    # Nova gone: a deliberate 503.
    dead = LiveServer(config.replace(nova_metadata_port=1), [NET_A_CTX])
    try:
        status, _, body = get(dead.port, "/openstack/latest/meta_data.json")
        assert status == 503 and b"unavailable" in body
    finally:
        dead.stop()


def test_signed_listener_accepts_neutron_style_requests() -> None:
    from netmeta.model.metadata.signing import sign

    server = LiveServer(Config(metadata_proxy_shared_secret="s3cret"), [SIGNED])
    good = {"X-Instance-ID": VM1, "X-Tenant-ID": "proj-1", "X-Instance-ID-Signature": sign("s3cret", VM1), "X-Forwarded-For": "10.9.9.9"}
    try:
        status, _, body = get(server.port, "/openstack/latest/meta_data.json", good)
        assert status == 200 and json.loads(body)["uuid"] == VM1
        assert get(server.port, "/latest/meta-data/local-ipv4", good)[2] == b"127.0.0.1"
        for name in ("X-Instance-ID", "X-Instance-ID-Signature", "X-Tenant-ID"):
            missing = {k: v for k, v in good.items() if k != name}
            status, _, body = get(server.port, "/latest/meta-data/", missing)
            assert status == 400 and name.encode() in body
        doubled = raw(server.port, b"GET /latest HTTP/1.1\r\nX-Instance-ID: a\r\nX-Instance-ID: b\r\nX-Tenant-ID: p\r\nX-Instance-ID-Signature: s\r\n\r\n")
        assert doubled[0][0] == 400 and b"Multiple X-Instance-ID" in doubled[0][2]
        status, _, body = get(server.port, "/latest", {**good, "X-Instance-ID-Signature": "0" * 64})
        assert (status, body) == (403, b"Invalid proxy request signature.\n")
        assert get(server.port, "/latest", {**good, "X-Tenant-ID": "proj-2"})[0] == 404
        other = {**good, "X-Instance-ID": "nope", "X-Instance-ID-Signature": sign("s3cret", "nope")}
        assert get(server.port, "/latest", other)[0] == 404
    finally:
        server.stop()


# --- fuzzing the real protocol ------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SEGMENTS = st.sampled_from(
    ["openstack", "latest", "2009-04-04", "1.0", "meta-data", "user-data", "public-keys", "0", "openssh-key",
     "meta_data.json", "password", "..", ".", "", "ec2", "api", "token", "2013-04-04", "%2e%2e", "%00", "placement",
     "dynamic", "instance-identity", "document", "network_data.json", "?a=b", "#f", "é"]
)
_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "GÉT", "CONNECT"])
_HEADER_NAMES = st.sampled_from(
    ["X-aws-ec2-metadata-token", "X-aws-ec2-metadata-token-ttl-seconds", "X-Forwarded-For", "X-Instance-ID",
     "Content-Length", "Connection", "Transfer-Encoding", "Expect", "Host", "X-Neutron-Network-ID", "Bad Name"]
)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    server = LiveServer(Config(imds_tokens="optional"), [NET_B_CTX])
    yield server
    server.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=_METHODS,
    segments=st.lists(_SEGMENTS, max_size=6),
    headers=st.lists(st.tuples(_HEADER_NAMES, st.text(st.characters(codec="latin-1"), max_size=20)), max_size=4),
    body=st.binary(max_size=40),
)
def test_fuzz_never_500_never_another_guest(fuzz_server: LiveServer, method: str, segments: list[str], headers: list[tuple[str, str]], body: bytes) -> None:
    path = "/" + "/".join(segments)
    head = f"{method} {path} HTTP/1.1\r\n".encode("utf-8", "replace")
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode("latin-1")
    head += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=5) as sock:
        sock.sendall(head + b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n")
        answers = read_responses(sock, 2, heads=(0,) if method == "HEAD" else ())
    assert answers, "the server must answer, not hang up silently"
    for status, _, payload in answers:
        assert status < 500 or status == 505
        assert VM1.encode() not in payload and b"i-1b2c3d4e" not in payload and b"vm1" not in payload
        assert b"Traceback" not in payload


def test_rate_limit_answers_429_with_retry_after(tmp_path: Any) -> None:
    from netmeta.config import RateLimitConfig

    vendor = tmp_path / "vendor.json"
    vendor.write_text('{"cloud": "netmeta"}')
    limits = RateLimitConfig(rate_limit_enabled=True, base_query_rate_limit=3, burst_query_rate_limit=3)
    # No pause after a 429 here (h1's refusal_pause): a paused connection would outlive the server.
    server = LiveServer(Config(rate_limiting=limits, vendordata_jsonfile_path=str(vendor)), [NET_A_CTX],
                        shared=HttpShared(Limits(refusal_pause=0)))
    try:
        first = get(server.port, "/openstack/latest/vendor_data.json")
        assert (first[0], first[2]) == (200, b'{"cloud": "netmeta"}')
        statuses = [get(server.port, "/latest/meta-data/")[:2] for _ in range(3)]
        assert [s for s, _ in statuses] == [200, 200, 429]
        assert int(statuses[-1][1]["retry-after"]) >= 1
    finally:
        server.stop()


def test_password_store_failure_is_a_503_not_a_traceback(live: LiveServer) -> None:
    async def broken(instance_id: str, value: str) -> bool:
        raise ConnectionError("server down")

    live.passwords.set_password = broken  # type: ignore[method-assign]
    status, _, body = get(live.port, "/openstack/latest/password", method="POST", body=b"pw")
    assert status == 503 and b"could not be stored" in body


# --- slow and greedy clients ------------------------------------------------------


def test_a_trickling_request_is_cut_off_from_its_first_byte() -> None:
    server = LiveServer(Config(), [ListenerContext("network", NET_A)], shared=HttpShared(Limits(header_timeout=0.6)))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            started = time.monotonic()
            request = b"GET /openstack HTTP/1.1\r\nHost: x\r\n"
            closed_at = None
            for byte in request:  # one byte every 0.1 s: never idle for long, never finished
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed_at = time.monotonic()
                    break
                time.sleep(0.1)
            if closed_at is None:
                sock.settimeout(2)
                assert sock.recv(100) == b""
                closed_at = time.monotonic()
        # Trickling must not extend the deadline: cut off ~0.6 s after the first byte.
        assert closed_at - started < 1.8
    finally:
        server.stop()


def test_one_guest_cannot_hold_unbounded_connections() -> None:
    server = LiveServer(Config(), [ListenerContext("network", NET_A)], shared=HttpShared(caps=ConnectionCaps(Caps(per_port=3))))
    held = []
    try:
        for _ in range(3):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.settimeout(3)
        try:
            assert extra.recv(100) == b""  # refused: closed at once ...
        except ConnectionResetError:
            pass  # ... by a reset
        extra.close()
        # The held connections still work, and closing one frees a place.
        held[0].sendall(b"GET /openstack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert held[0].recv(100).startswith(b"HTTP/1.1 200")
        held.pop(0).close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for _ in range(50):  # the server notices the close asynchronously
            try:
                conn.request("GET", "/openstack")
                if conn.getresponse().status == 200:
                    break
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                time.sleep(0.05)
        else:
            pytest.fail("no connection accepted after one was freed")
        conn.close()
    finally:
        for sock in held:
            sock.close()
        server.stop()
