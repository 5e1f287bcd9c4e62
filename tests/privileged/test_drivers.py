"""The drivers against the real kernel and real processes.

Topology used by the DHCP tests (all in namespaces of the test's scope)::

    <p>dhcp:  tap<port> 192.168.111.2/24 + 169.254.169.254/32, dnsmasq, listener
                  │ veth
    <p>fabric:   d-<port> ── brq<net> ── g-<port>
                                            │ veth
    <p>guest: eth0 fa:16:3e:00:00:05, dhclient with our script
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from netmeta.agent.plan import routes_in_sync
from netmeta.drivers import dhclient, dnsmasq, files, iptables, links, netns, processes, vxlan
from netmeta.drivers.errors import DriverError, PermanentDriverError, ProcessGone, TemporaryDriverError
from netmeta.drivers.sockets import listening_socket_in_namespace

from .conftest import NamespaceScope

pytestmark = pytest.mark.privileged

NET = "0f3e2d1c-aaaa-bbbb-cccc-000000000001"
DHCP_PORT = "25fabc7f-c2aa-4444-8888-000000000002"
GUEST_PORT = "77aa11bb-22cc-4444-8888-000000000005"
SUBNET = "5ub7e7aa-0000-4444-8888-000000000003"
BRIDGE = f"brq{NET[:11]}"
TAP = f"tap{DHCP_PORT[:11]}"
DHCP_IP = "192.168.111.2"
GUEST_IP = "192.168.111.5"
GUEST_MAC = "fa:16:3e:00:00:05"
GATEWAY = "192.168.111.1"


def _route(routes: list[dict], dst: str) -> dict | None:
    return next((r for r in routes if r["dst"] == dst), None)


# --- namespaces ---------------------------------------------------------------


def test_namespace_lifecycle(netns_scope: NamespaceScope) -> None:
    name = netns_scope.name("a")
    assert not netns.namespace_exists(name)
    assert netns.namespace_inode(name) is None
    assert netns.ensure_namespace(name) is True
    inode = netns.namespace_inode(name)
    assert inode is not None
    assert netns.ensure_namespace(name) is False  # idempotent
    assert netns.namespace_inode(name) == inode
    assert name in netns.list_namespaces()
    assert links.get_link(name, "lo")["up"]
    assert netns.delete_namespace(name) is True
    assert netns.delete_namespace(name) is False  # already gone = success
    netns.ensure_namespace(name)
    assert netns.namespace_inode(name) != inode  # re-created: new identity


def test_refuses_root_namespace() -> None:
    for bad in ("", None, "../x", "a/b"):
        with pytest.raises(PermanentDriverError):
            netns.check_name(bad)  # type: ignore[arg-type]
    with pytest.raises(PermanentDriverError):
        iptables.save("")
    with pytest.raises(PermanentDriverError):
        links.ensure_bridge("", "brqx")  # "" never means the host; only None does
    with pytest.raises(PermanentDriverError):
        iptables.restore(None, "*filter\nCOMMIT\n")  # type: ignore[arg-type]
    with pytest.raises(PermanentDriverError):
        netns.set_sysctl("", "net.ipv4.ip_forward", 1)


def test_missing_namespace_is_temporary(netns_scope: NamespaceScope) -> None:
    ghost = netns_scope.name("ghost")
    with pytest.raises(TemporaryDriverError):
        links.list_links(ghost)
    assert not netns.namespace_exists(ghost)  # and it was not created by accident


def test_sysctl_and_exec_stay_inside(netns_scope: NamespaceScope) -> None:
    ns = netns_scope.namespace("r")
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        root_before = handle.read()
    assert netns.set_sysctl(ns, "net.ipv4.ip_forward", 1) in (True, False)
    assert netns.get_sysctl(ns, "net.ipv4.ip_forward") == "1"
    assert netns.set_sysctl(ns, "net.ipv4.ip_forward", 1) is False
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        assert handle.read() == root_before
    with pytest.raises(PermanentDriverError):
        netns.set_sysctl(ns, "kernel.hostname", "x")
    out = netns.run_in_namespace(ns, ["ip", "-o", "link", "show"]).stdout
    assert [line.split(": ")[1] for line in out.splitlines()] == ["lo"]
    with pytest.raises(PermanentDriverError):
        netns.run_in_namespace(ns, ["ip", "link", "show", "nonexistent0"])


# --- links and addresses ------------------------------------------------------


def test_bridge_veths_and_addresses_converge(netns_scope: NamespaceScope) -> None:
    fabric = netns_scope.namespace("fabric")
    a = netns_scope.namespace("a")
    b = netns_scope.namespace("b")
    br = links.ensure_bridge(fabric, BRIDGE, 1450)
    assert links.ensure_bridge(fabric, BRIDGE, 1450) == br
    ia = links.ensure_veth_into(a, "tapaaaa", fabric, "d-aaaa", BRIDGE, "fa:16:3e:00:00:0a", 1450)
    ib = links.ensure_veth_into(b, "eth0", fabric, "g-bbbb", BRIDGE, "fa:16:3e:00:00:0b", 1450)
    # Calling again changes nothing: same ifindex, same state.
    assert links.list_links(fabric) == sorted([BRIDGE, "d-aaaa", "g-bbbb", "lo"])
    before = links.describe_links(fabric), links.describe_links(a)
    assert links.ensure_veth_into(a, "tapaaaa", fabric, "d-aaaa", BRIDGE, "fa:16:3e:00:00:0a", 1450) == ia
    assert links.ensure_veth_into(b, "eth0", fabric, "g-bbbb", BRIDGE, "fa:16:3e:00:00:0b", 1450) == ib
    assert (links.describe_links(fabric), links.describe_links(a)) == before
    tap = links.get_link(a, "tapaaaa")
    assert tap["mac"] == "fa:16:3e:00:00:0a" and tap["mtu"] == 1450 and tap["up"]
    outer = links.get_link(fabric, "d-aaaa")
    assert outer["master"] == BRIDGE and outer["up"] and outer["kind"] == "veth"
    bridge = links.get_link(fabric, BRIDGE)
    assert bridge["kind"] == "bridge" and bridge["up"] and bridge["index"] == br

    # Drift is repaired in place: wrong MAC, lost master, link down.
    netns.run_in_namespace(a, ["ip", "link", "set", "tapaaaa", "address", "fa:16:3e:99:99:99"])
    netns.run_in_namespace(fabric, ["ip", "link", "set", "d-aaaa", "nomaster", "down"])
    assert links.ensure_veth_into(a, "tapaaaa", fabric, "d-aaaa", BRIDGE, "fa:16:3e:00:00:0a", 1450) == ia
    assert links.get_link(a, "tapaaaa")["mac"] == "fa:16:3e:00:00:0a"
    assert links.get_link(fabric, "d-aaaa")["master"] == BRIDGE
    assert links.get_link(fabric, "d-aaaa")["up"]

    # A half-present pair is rebuilt.
    assert links.delete_link(b, "eth0") is True
    assert not links.link_exists(fabric, "g-bbbb")  # the peer went with it
    assert links.delete_link(b, "eth0") is False
    links.ensure_veth_into(b, "eth0", fabric, "g-bbbb", BRIDGE, "fa:16:3e:00:00:0b", 1450)
    assert links.link_exists(b, "eth0") and links.link_exists(fabric, "g-bbbb")

    # Addresses converge both ways; IPv6 link-local is ignored.
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24", "169.254.169.254/32"}) is True
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24", "169.254.169.254/32"}) is False
    assert links.get_addresses(a, "tapaaaa") == {"10.9.0.1/24", "169.254.169.254/32"}
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24", "10.9.1.1/24"}) is True
    assert links.get_addresses(a, "tapaaaa") == {"10.9.0.1/24", "10.9.1.1/24"}
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24"}) is True
    assert links.get_addresses(a, "tapaaaa") == {"10.9.0.1/24"}
    links.ensure_addresses(b, "eth0", {"10.9.0.2/24"})
    routes = links.get_routes(a)
    assert _route(routes, "10.9.0.0/24") == {
        "dst": "10.9.0.0/24", "gateway": None, "dev": "tapaaaa", "proto": 2, "scope": 253,
    }
    # IPv6 is managed too, without DAD (usable at once); the kernel's link-local stays untouched.
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24", "fd00::1/64", "fe80::a9fe:a9fe/128"}) is True
    assert links.get_addresses(a, "tapaaaa") == {"10.9.0.1/24", "fd00::1/64", "fe80::a9fe:a9fe/128"}
    six = dict(links.ipv6_addresses(a, "tapaaaa"))
    assert six["fd00::1/64"] and six["fe80::a9fe:a9fe/128"]  # not tentative
    assert any(c.startswith("fe80::") and c.endswith("/64") for c in six)  # the kernel's own
    assert links.ensure_addresses(a, "tapaaaa", {"10.9.0.1/24"}) is True
    assert {c for c in dict(links.ipv6_addresses(a, "tapaaaa")) if not c.endswith("/64") or c.startswith("fd")} == set()
    with pytest.raises(PermanentDriverError):
        links.ensure_addresses(a, "tapaaaa", {"fd00::1/129"})
    with pytest.raises(TemporaryDriverError):
        links.ensure_addresses(a, "nosuch0", {"10.9.0.1/24"})

    # Traffic crosses the bridge between the two namespaces (TCP, no ping here).
    listener = listening_socket_in_namespace(a, "10.9.0.1", 9999)
    try:
        client = netns.call_in_namespace(
            b, lambda: socket.create_connection(("10.9.0.1", 9999), timeout=5)
        )
        with client:
            assert client.getsockname()[0] == "10.9.0.2"
    finally:
        listener.close()

    assert links.delete_link(fabric, BRIDGE) is True
    assert links.delete_link(fabric, BRIDGE) is False
    with pytest.raises(PermanentDriverError):
        links.check_ifname("x" * 16)


def test_one_look_at_a_namespace_shows_links_routes_and_vxlan_entries(netns_scope: NamespaceScope) -> None:
    """links.observe_namespace: what the agent's full pass reads, in one netlink session per namespace."""
    fabric = netns_scope.namespace("fabric")
    a = netns_scope.namespace("a")
    links.ensure_bridge(fabric, BRIDGE, 1450)
    links.ensure_veth_into(a, "tapaaaa", fabric, "d-aaaa", BRIDGE, "fa:16:3e:00:00:0a", 1450)
    links.ensure_addresses(a, "tapaaaa", {"10.9.0.2/24"})
    wanted = [("10.9.0.1/32", (), "tapaaaa"), ("0.0.0.0/0", ("10.9.0.1",), "tapaaaa"),
              ("10.7.0.0/16", ("10.9.0.4", "10.9.0.3"), None)]
    assert links.ensure_routes(a, wanted) == []
    seen, routes, entries = links.observe_namespace(a, routes=True)
    assert entries is None and seen["tapaaaa"]["addresses"] == {"10.9.0.2/24"}
    # Only netmeta's routes (not the kernel's 10.9.0.0/24 link route), nexthops sorted.
    assert routes == (("0.0.0.0/0", ("10.9.0.1",), "tapaaaa"), ("10.7.0.0/16", ("10.9.0.3", "10.9.0.4"), None),
                      ("10.9.0.1/32", (), "tapaaaa"))
    assert routes_in_sync(routes, tuple(wanted))
    assert links.observe_namespace(a)[1] is None

    # The fabric: a VXLAN device's settings in its link, its remote entries from one dump.
    links.ensure_bridge(fabric, "brq-under", 1500)
    links.ensure_addresses(fabric, "brq-under", {"10.99.0.1/24"})
    vxlan.ensure_vxlan(fabric, fabric, "vxlan-77", 77, "10.99.0.1", BRIDGE, 1450)
    vxlan.ensure_fdb(fabric, "vxlan-77", [("00:00:00:00:00:00", "10.99.0.2"), ("fa:16:3e:00:00:0b", "10.99.0.2")])
    seen, _, entries = links.observe_namespace(fabric, fdb=True)
    device = seen["vxlan-77"]
    assert (device["kind"], device["vni"], device["local"], device["learning"], device["master"]) == (
        "vxlan", 77, "10.99.0.1", False, BRIDGE)
    assert entries == {"vxlan-77": {("00:00:00:00:00:00", "10.99.0.2"), ("fa:16:3e:00:00:0b", "10.99.0.2")}}
    assert entries["vxlan-77"] == vxlan.observe_fdb(fabric, "vxlan-77")
    assert {k: device[k] for k in ("vni", "local", "port", "learning", "mtu", "up", "master")} == {
        k: v for k, v in vxlan.get_vxlan(fabric, "vxlan-77").items() if k != "index"}


def test_netmetas_netlink_reads_what_pyroute2_reads(netns_scope: NamespaceScope) -> None:
    """drivers.rtnl (the drivers' netlink client) against pyroute2's IPRoute, on the same real links."""
    from pyroute2 import IPRoute

    fabric = netns_scope.namespace("fabric")
    a = netns_scope.namespace("a")
    links.ensure_bridge(fabric, BRIDGE, 1450)
    links.ensure_veth_into(a, "tapbbbb", fabric, "d-bbbb", BRIDGE, "fa:16:3e:00:00:0c", 1450)
    links.ensure_addresses(a, "tapbbbb", {"10.8.0.2/24", "fe80::a9fe:a9fe/128"})
    links.ensure_routes(a, [("10.6.0.0/16", ("10.8.0.3", "10.8.0.4"), None), ("10.8.0.1/32", (), "tapbbbb")])
    vxlan.ensure_vxlan(fabric, fabric, "vxlan-78", 78, "10.8.0.9", BRIDGE, 1450, port=4789)
    for ns in (fabric, a):
        ours = netns.netlink(ns)
        with ours as ipr, IPRoute(fileno=netns.netlink_socket(ns)) as upstream:
            mine = {m["index"]: m for m in ipr.link("dump")}
            theirs = {m["index"]: m for m in upstream.link("dump")}
            assert set(mine) == set(theirs)
            for index, m in theirs.items():
                for name in ("IFLA_IFNAME", "IFLA_MTU", "IFLA_MASTER", "IFLA_LINK", "IFLA_ADDRESS", "IFLA_OPERSTATE"):
                    assert mine[index].get_attr(name) == m.get_attr(name), (ns, index, name)
                assert mine[index]["flags"] == m["flags"] and links._kind(mine[index]) == links._kind(m)
                if links._kind(m) == "vxlan":
                    assert links.vxlan_settings(mine[index]) == links.vxlan_settings(m) == {
                        "vni": 78, "local": "10.8.0.9", "port": 4789, "learning": False}
            key = lambda m: (m["index"], m["prefixlen"], m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"))  # noqa: E731
            assert sorted(map(key, ipr.addr("dump"))) == sorted(map(key, upstream.addr("dump")))
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in theirs.values()}
            for family in (socket.AF_INET, socket.AF_INET6):
                assert sorted(links._seen_route(m, names) for m in ipr.route("dump", family=family)) == sorted(
                    links._seen_route(m, names) for m in upstream.route("dump", family=family))


# --- sockets ------------------------------------------------------------------


class TinyHTTP:
    """A one-line HTTP server on a given listening socket, in a thread."""

    def __init__(self, sock: socket.socket, body: bytes) -> None:
        self.sock, self.body = sock, body
        self.stop = threading.Event()
        self.peers: list[str] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                self.peers.append(peer[0])
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(self.body), self.body)
                )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def _root_listens_on(port: int) -> bool:
    # /proc/net/tcp as seen from this (root-namespace) process.
    with open("/proc/net/tcp") as handle:
        rows = handle.read().splitlines()[1:]
    return any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows)


def test_listening_socket_lives_in_its_namespace(netns_scope: NamespaceScope) -> None:
    fabric = netns_scope.namespace("fabric")
    srv = netns_scope.namespace("srv")
    cli = netns_scope.namespace("cli")
    links.ensure_bridge(fabric, "brqsock", 1500)
    links.ensure_veth_into(srv, "tapsrv", fabric, "d-srv", "brqsock", "fa:16:3e:00:01:01")
    links.ensure_veth_into(cli, "eth0", fabric, "g-cli", "brqsock", "fa:16:3e:00:01:02")
    links.ensure_addresses(cli, "eth0", {"10.7.0.9/24"})
    # Bound before the address exists: IP_FREEBIND.
    sock = listening_socket_in_namespace(srv, "10.7.0.1", 18080)
    assert sock.getblocking() is False
    server = TinyHTTP(sock, b"from-srv")
    try:
        assert not _root_listens_on(18080)
        links.ensure_addresses(srv, "tapsrv", {"10.7.0.1/24"})
        out = netns.run_in_namespace(
            cli, ["curl", "-s", "--max-time", "5", "http://10.7.0.1:18080/"]
        ).stdout
        assert out == "from-srv"
        assert server.peers == ["10.7.0.9"]
        with pytest.raises(DriverError):
            listening_socket_in_namespace(srv, "10.7.0.1", 18080, freebind=False)  # in use
    finally:
        server.close()


# --- iptables -----------------------------------------------------------------


def test_iptables_restore_save_round_trip(netns_scope: NamespaceScope) -> None:
    ns = netns_scope.namespace("router")
    payload = "\n".join([
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        "-A PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697",
        "COMMIT",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A INPUT -m mark --mark 0x1/0xffff -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 9697 -j DROP",
        "COMMIT",
    ])
    iptables.restore(ns, payload)
    saved = iptables.save(ns)
    assert "-A PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697" in saved
    assert "-A INPUT -p tcp -m tcp --dport 9697 -j DROP" in saved
    # Restoring the saved text is a fixed point.
    iptables.restore(ns, saved)
    assert _rules(iptables.save(ns)) == _rules(saved)
    # Without --noflush the tables are replaced whole.
    iptables.restore(ns, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    assert "9697 -j DROP" not in iptables.save(ns, "filter")
    with pytest.raises(PermanentDriverError):
        iptables.restore(ns, "*filter\n-A NOSUCHCHAIN -j ACCEPT\nCOMMIT\n")


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("-A", "*", ":"))]


# --- processes and files ------------------------------------------------------


def test_write_file_atomic(netns_scope: NamespaceScope) -> None:
    path = netns_scope.path("net", "opts")
    assert files.write_file_atomic(path, "a\n") is True
    assert files.write_file_atomic(path, "a\n") is False
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert files.write_file_atomic(path, "b\n") is True
    with open(path) as handle:
        assert handle.read() == "b\n"
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")] == []


def test_dnsmasq_failure_is_reported(netns_scope: NamespaceScope) -> None:
    ns = netns_scope.namespace("bad")
    pid_file = netns_scope.path("bad", "pid")
    with pytest.raises(PermanentDriverError, match="dnsmasq"):
        dnsmasq.start(ns, ["dnsmasq", f"--pid-file={pid_file}", "--no-such-option"], pid_file)
    assert processes.running_pid(pid_file, pid_file) is None


# --- DHCP end to end ----------------------------------------------------------


@pytest.fixture
def dhcp_network(netns_scope: NamespaceScope, host_files_untouched: None) -> Iterator[dict]:
    """fabric + bridge, a qdhcp-like namespace with its tap, a guest with eth0."""
    fabric = netns_scope.namespace("fabric")
    dhcp = netns_scope.namespace("dhcp")
    guest = netns_scope.namespace("guest")
    links.ensure_bridge(fabric, BRIDGE, 1500)
    links.ensure_veth_into(dhcp, TAP, fabric, f"d-{DHCP_PORT[:11]}", BRIDGE, "fa:16:3e:00:00:02")
    links.ensure_veth_into(guest, "eth0", fabric, f"g-{GUEST_PORT[:11]}", BRIDGE, GUEST_MAC)
    links.ensure_addresses(dhcp, TAP, {f"{DHCP_IP}/24", "169.254.169.254/32"})
    yield {"fabric": fabric, "dhcp": dhcp, "guest": guest}


def _opts(routes: str, router: str) -> str:
    tag = f"tag:subnet-{SUBNET}"
    return (
        f"{tag},option:classless-static-route,{routes}\n"
        f"{tag},249,{routes}\n"
        f"{tag},option:router{router}\n"
    )


def test_dnsmasq_dhclient_metadata_route_and_listener(
    netns_scope: NamespaceScope, dhcp_network: dict
) -> None:
    dhcp, guest = dhcp_network["dhcp"], dhcp_network["guest"]
    conf = netns_scope.path("dhcp", NET, "x")[:-2]
    pid_file, opts, hosts = f"{conf}/pid", f"{conf}/opts", f"{conf}/host"
    files.write_file_atomic(hosts, f"{GUEST_MAC},host-192-168-111-5.openstacklocal,{GUEST_IP}\n")
    files.write_file_atomic(opts, _opts(f"169.254.169.254/32,{DHCP_IP}", ""))
    argv = [
        "dnsmasq", "--no-hosts", "--no-resolv", "--port=0", "--conf-file=/dev/null",
        "--bind-interfaces", f"--interface={TAP}", "--except-interface=lo",
        f"--pid-file={pid_file}", f"--dhcp-hostsfile={hosts}", f"--dhcp-optsfile={opts}",
        f"--dhcp-leasefile={conf}/leases",
        f"--dhcp-range=set:subnet-{SUBNET},192.168.111.0,static,255.255.255.0,120s",
        "--dhcp-lease-max=256", "--domain=openstacklocal",
    ]
    pid = netns_scope.track(dnsmasq.start(dhcp, argv, pid_file), pid_file)
    assert dnsmasq.running_pid(pid_file, pid_file) == pid
    assert pid_file in " ".join(dnsmasq.cmdline(pid))

    # The metadata listener, bound in the DHCP namespace only.
    server = TinyHTTP(listening_socket_in_namespace(dhcp, "169.254.169.254", 80), b"metadata-ok")
    guest_paths = dhclient.GuestPaths(netns_scope.path("guest", "g")[:-2])
    try:
        gpid = netns_scope.track(dhclient.start(guest, "eth0", guest_paths, timeout=30), guest_paths.pid)
        assert links.get_addresses(guest, "eth0") == {f"{GUEST_IP}/24"}
        routes = links.get_routes(guest)
        meta = _route(routes, "169.254.169.254/32")
        assert meta is not None and meta["gateway"] == DHCP_IP and meta["dev"] == "eth0"
        assert _route(routes, "default") is None
        env = dhclient.read_env(guest_paths)
        assert env["reason"] in ("BOUND", "REBOOT")
        assert env["new_ip_address"] == GUEST_IP
        assert env["new_rfc3442_classless_static_routes"].split() == [
            "32", "169", "254", "169", "254", *DHCP_IP.split(".")
        ]
        assert not _root_listens_on(80)

        # The guest reaches the listener through its DHCP-provided route.
        out = netns.run_in_namespace(
            guest, ["curl", "-s", "--max-time", "5", "http://169.254.169.254/"]
        ).stdout
        assert out == "metadata-ok"
        assert server.peers == [GUEST_IP]

        # A router appears: new options, SIGHUP, renew.
        assert files.write_file_atomic(
            opts, _opts(f"169.254.169.254/32,{DHCP_IP},0.0.0.0/0,{GATEWAY}", f",{GATEWAY}")
        )
        dnsmasq.reload(pid, pid_file)
        gpid2 = netns_scope.track(dhclient.renew(guest, "eth0", guest_paths, timeout=30), guest_paths.pid)
        assert gpid2 != gpid and not processes.pid_alive(gpid)
        routes = links.get_routes(guest)
        assert _route(routes, "169.254.169.254/32")["gateway"] == DHCP_IP
        assert _route(routes, "default")["gateway"] == GATEWAY
        assert links.get_addresses(guest, "eth0") == {f"{GUEST_IP}/24"}
        assert dnsmasq.running_pid(pid_file, pid_file) == pid  # SIGHUP kept the process

        # SIGTERM stopped dhclient without a RELEASE; the restart re-requested
        # the same address (INIT-REBOOT) and got the new options.
        with open(guest_paths.events) as handle:
            events = handle.read().split("\n")
        assert events[:4] == ["PREINIT ", f"BOUND {GUEST_IP}", "PREINIT ", f"REBOOT {GUEST_IP}"]

        # A renewal that changes nothing replaces the routes in place: the
        # route to 169.254.169.254 is there at every moment (metadata keeps
        # answering a guest while it renews).
        seen: list[bool] = []
        renewing = threading.Event()

        def watch_routes() -> None:
            while not renewing.is_set():
                seen.append(_route(links.get_routes(guest), "169.254.169.254/32") is not None)

        watcher = threading.Thread(target=watch_routes)
        watcher.start()
        try:
            netns_scope.track(dhclient.renew(guest, "eth0", guest_paths, timeout=30), guest_paths.pid)
        finally:
            renewing.set()
            watcher.join()
        assert len(seen) > 10 and all(seen), (len(seen), seen.count(False))
        # The router goes away again: the renewal drops the default route it no longer has.
        assert files.write_file_atomic(opts, _opts(f"169.254.169.254/32,{DHCP_IP}", ""))
        dnsmasq.reload(pid, pid_file)
        netns_scope.track(dhclient.renew(guest, "eth0", guest_paths, timeout=30), guest_paths.pid)
        routes = links.get_routes(guest)
        assert _route(routes, "default") is None and _route(routes, "169.254.169.254/32")["gateway"] == DHCP_IP
        assert dhclient.stop(guest, guest_paths) is True
        assert dhclient.stop(guest, guest_paths) is False
    finally:
        server.close()
    assert dnsmasq.stop(pid, expected_cmdline_substr=pid_file) is True
    assert dnsmasq.stop(pid, expected_cmdline_substr=pid_file) is False
    with pytest.raises(ProcessGone):
        dnsmasq.reload(pid, pid_file)
    # The guest's dhclient never wrote outside its directory.
    assert not os.path.exists("/var/lib/dhcp/dhclient.leases")
