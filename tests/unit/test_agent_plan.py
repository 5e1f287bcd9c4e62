"""The agent's plan-and-execute loop as transcripts on a fake host (no root).

Each test drives :class:`netmeta.agent.reconciler.Reconciler` through
snapshots and reads what it asked of the host, mitmproxy-playbook style:
the cases of issue 9 — a router attach rewrites files and signals dnsmasq
without a restart; a namespace made again restarts dnsmasq in it; a second
pass does nothing; a temporary error is retried with backoff for that object
alone; a permanent one is reported once and retried only when its spec
changes; a slow network never delays the others.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest

from netmeta.agent.plan import routes_in_sync
from netmeta.agent.reconciler import Reconciler
from netmeta.config import Config
from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError
from netmeta.model import names
from netmeta.model.types import HostRoute, RouterId
from tests.builders import attach, merge, tenant_network
from tests.fake_host import FakeHost

STATE = "/state"
CONFIG = Config(state_dir=STATE, fabric_namespace="fabric", enable_isolated_metadata=True)
DHCP = CONFIG.paths.dhcp_root  # /run/netmeta/<id>/dhcp: outside the state directory
DNSMASQ = ("start_dnsmasq", "reload_dnsmasq", "stop_dnsmasq")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agent(host: FakeHost, clock: Clock) -> Iterator[Reconciler]:
    reconciler = Reconciler(CONFIG, host, clock=clock, workers=4)
    yield reconciler
    reconciler.close()


def test_first_pass_builds_everything_in_order(agent: Reconciler, host: FakeHost) -> None:
    report = agent.converge(tenant_network(1), full=True)
    assert report.failed == {} and report.pending == []
    assert report.spawned == ["net1"]
    ns = "qdhcp-net1"
    steps = [c[:2] for c in host.calls()]
    # The ledger hears of every namespace and link before it is made.
    assert steps.index(("remember", ns)) < steps.index(("ensure_namespace", ns))
    assert steps.index(("ensure_bridge", "brqnet1")) < steps.index(("ensure_veth", ns))
    # Files before dnsmasq; the "loaded" marker after it started.
    assert steps.index(("write_files", f"{DHCP}/net1")) < steps.index(("start_dnsmasq", ns))
    assert steps[-1] == ("write_file", "loaded")
    assert "tag:subnet-sub1,option:classless-static-route,169.254.169.254/32,10.1.0.2" in host.files[f"{DHCP}/net1/opts"]


def test_qdhcp_takes_no_router_advertisements(agent: Reconciler, host: FakeHost) -> None:
    """Neutron's DeviceManager.setup: accept_ra off in the namespace before the tap is plugged, and on the tap."""
    agent.converge(tenant_network(1), full=True)
    ns = "qdhcp-net1"
    calls = host.calls()
    default = ("set_sysctl", ns, "net.ipv6.conf.default.accept_ra", "0")
    on_tap = ("set_sysctl", ns, "net.ipv6.conf.tapdhcp1.accept_ra", "0")
    steps = [c[:2] for c in calls]
    assert steps.index(("ensure_namespace", ns)) < calls.index(default) < steps.index(("ensure_veth", ns))
    assert calls.index(on_tap) > steps.index(("ensure_veth", ns))


def test_second_pass_does_nothing(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    host.clear()
    report = agent.converge(tenant_network(1))
    assert host.calls() == []
    assert not report.changed and report.failed == {}


def test_full_pass_on_a_converged_host_only_verifies(agent: Reconciler, host: FakeHost) -> None:
    snap = attach(tenant_network(1), 1)
    agent.converge(snap, full=True)
    host.clear()
    agent.converge(snap, full=True)
    # Files are rewritten only where they differ (none), forwarding is re-asserted
    # (the driver writes only a different value); no link, process or rule is touched.
    assert sorted(host.calls()) == [
        ("set_sysctl", "qdhcp-net1", "net.ipv6.conf.tapdhcp1.accept_ra", "0"),
        ("set_sysctl", "qrouter-r1", "net.ipv4.conf.all.arp_announce", "2"),
        ("set_sysctl", "qrouter-r1", "net.ipv4.conf.all.arp_ignore", "1"),
        ("set_sysctl", "qrouter-r1", "net.ipv4.ip_forward", "1"),
        ("set_sysctl", "qrouter-r1", "net.ipv6.conf.all.forwarding", "1"),
        ("write_files", f"{DHCP}/net1", ()),
    ]


def test_full_pass_on_a_converged_host_observes_each_namespace_once_and_sets_no_route(
    agent: Reconciler, host: FakeHost,
) -> None:
    snap = attach(tenant_network(1), 1)
    agent.converge(snap, full=True)
    host.clear()
    agent.converge(snap, full=True)
    # One look per namespace (links and routes together) and one at the fabric; routes found
    # in place are not set again, so an agent restart over an intact host runs no netlink writes.
    looks = [c for c in host.transcript if c[0].startswith("observe_")]
    assert sorted(looks) == [("observe_fabric",), ("observe_namespace", "qdhcp-net1"),
                             ("observe_namespace", "qrouter-r1")]
    assert host.calls("ensure_routes") == []


def test_a_route_deleted_by_hand_comes_back_on_the_full_pass(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    host.routes["qdhcp-net1"] = ()
    host.clear()
    agent.converge(tenant_network(1))
    assert host.calls("ensure_routes") == []  # between full passes the kernel is not read again
    agent.converge(tenant_network(1), full=True)
    assert host.calls("ensure_routes") == [
        ("ensure_routes", "qdhcp-net1", (("0.0.0.0/0", ("10.1.0.1",), names.tap_name("dhcp1")),))]


def test_routes_in_sync() -> None:
    wanted = (("10.2.0.0/24", ("10.1.0.5", "10.1.0.4"), None), ("0.0.0.0/0", ("10.1.0.1",), "tap1"))
    seen = (("0.0.0.0/0", ("10.1.0.1",), "tap1"), ("10.2.0.0/24", ("10.1.0.4", "10.1.0.5"), "qr-1"))
    assert routes_in_sync(seen, wanted)
    assert not routes_in_sync(None, wanted)  # not observed
    assert not routes_in_sync(seen[:1], wanted)  # one missing
    assert not routes_in_sync((*seen, ("10.9.0.0/16", ("10.1.0.9",), "tap1")), wanted)  # one extra
    assert not routes_in_sync((("0.0.0.0/0", ("10.1.0.1",), "tap2"), seen[1]), wanted)  # on another device
    assert not routes_in_sync((("0.0.0.0/0", ("10.1.0.9",), "tap1"), seen[1]), wanted)  # via another gateway
    assert routes_in_sync((), ())


def test_router_attach_rewrites_files_and_signals_without_restart(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    pid = host.dnsmasq_pid(f"{DHCP}/net1/pid", "net1")
    host.clear()
    report = agent.converge(attach(tenant_network(1), 1))
    assert host.calls(*DNSMASQ) == [("reload_dnsmasq", pid)]
    (written,) = host.calls("write_files")
    assert "opts" in written[2]  # the router port also gets a host entry, so host files change too
    assert report.signalled == ["net1"] and report.spawned == []
    assert "169.254.169.254/32,10.1.0.1" in host.files[f"{DHCP}/net1/opts"]  # via the gateway now
    assert "restore_iptables" in {c[0] for c in host.calls()}  # and the router's namespace is made


def test_a_namespace_made_again_restarts_dnsmasq_in_it(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    old = host.dnsmasq_pid(f"{DHCP}/net1/pid", "net1")
    host.remake_namespace("qdhcp-net1")  # deleted and created by hand: empty, new inode
    host.clear()
    report = agent.converge(tenant_network(1))
    assert host.calls(*DNSMASQ) == [("stop_dnsmasq", old), ("start_dnsmasq", "qdhcp-net1")]
    assert ("ensure_veth", "qdhcp-net1") in [c[:2] for c in host.calls()]  # the tap is plugged again
    new = host.dnsmasq_pid(f"{DHCP}/net1/pid", "net1")
    assert new != old and host.processes[new][1] == host.namespaces["qdhcp-net1"]
    assert report.spawned == ["net1"]


def test_dead_dnsmasq_is_started_again_without_touching_the_namespace(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    host.processes.clear()
    host.clear()
    agent.converge(tenant_network(1))
    assert host.calls(*DNSMASQ) == [("start_dnsmasq", "qdhcp-net1")]


def test_files_written_but_never_signalled_are_signalled_next_time(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    pid = host.dnsmasq_pid(f"{DHCP}/net1/pid", "net1")
    # An agent that died between writing and signalling: files new, marker old.
    host.fail[("reload_dnsmasq", pid)] = [TemporaryDriverError("killed")]
    agent.converge(attach(tenant_network(1), 1))
    fresh = Reconciler(CONFIG, host, workers=1)  # a restarted agent
    try:
        host.clear()
        report = fresh.converge(attach(tenant_network(1), 1), full=True)
    finally:
        fresh.close()
    assert host.calls(*DNSMASQ) == [("reload_dnsmasq", pid)]
    assert report.signalled == ["net1"]


def test_temporary_error_backs_off_for_that_object_alone(agent: Reconciler, host: FakeHost, clock: Clock) -> None:
    two = merge(tenant_network(1), tenant_network(2))
    host.fail[("start_dnsmasq", "qdhcp-net1")] = TemporaryDriverError("slow kernel")
    report = agent.converge(two, full=True)
    assert report.spawned == ["net2"]  # the other network converged
    assert set(report.failed) == {"network net1"}
    attempts = []
    for dt in (0.5, 0.6, 1.0, 2.0, 4.0):  # t = +0.5, +1.1, +2.1, +4.1, +8.1
        clock.now += dt
        host.clear()
        agent.converge(two)
        if host.calls("start_dnsmasq"):
            attempts.append(round(clock.now - 1000.0, 1))
    # Retries after 1 s, then 2 s more, then 4 s more: doubling, per object.
    assert attempts == [1.1, 4.1, 8.1]
    assert agent.retries[("network", "net1")].attempts == 4
    assert host.calls("start_dnsmasq") == [("start_dnsmasq", "qdhcp-net1")]  # never net2 again
    del host.fail[("start_dnsmasq", "qdhcp-net1")]
    clock.now += 16
    report = agent.converge(two)
    assert report.spawned == ["net1"] and ("network", "net1") not in agent.retries


def test_a_changed_spec_retries_a_backing_off_object_at_once(agent: Reconciler, host: FakeHost, clock: Clock) -> None:
    host.fail[("start_dnsmasq", "qdhcp-net1")] = [TemporaryDriverError("busy")]
    agent.converge(tenant_network(1), full=True)
    host.clear()
    clock.now += 0.1
    report = agent.converge(attach(tenant_network(1), 1))
    assert report.spawned == ["net1"]


def test_permanent_error_is_reported_once_and_retried_when_the_spec_changes(
    agent: Reconciler, host: FakeHost, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    two = merge(tenant_network(1), tenant_network(2))
    host.fail[("start_dnsmasq", "qdhcp-net1")] = PermanentDriverError("dnsmasq: bad option")
    first = agent.converge(two, full=True)
    assert first.failed == {"network net1": "dnsmasq: bad option"}
    for _ in range(3):
        clock.now += 120
        host.clear()
        again = agent.converge(two)
        assert again.failed == {} and host.calls("start_dnsmasq") == []
    assert [r.message for r in caplog.records if "bad option" in r.message] == [
        "network net1: dnsmasq: bad option (not retried until its spec changes)"
    ]
    del host.fail[("start_dnsmasq", "qdhcp-net1")]
    changed = merge(attach(tenant_network(1), 1), tenant_network(2))
    report = agent.converge(changed)
    assert report.spawned == ["net1"] and report.failed == {}


def test_a_slow_network_never_delays_the_others(agent: Reconciler, host: FakeHost) -> None:
    release = threading.Event()
    host.block[("start_dnsmasq", "qdhcp-net1")] = release  # a 10 s dnsmasq start
    try:
        two = merge(tenant_network(1), tenant_network(2))
        began = time.monotonic()
        report = agent.converge(two, full=True, wait=0.3)
        assert report.spawned == ["net2"]
        assert report.pending == ["network net1"]
        # A change to net2 while net1 still starts is applied at once.
        changed = merge(tenant_network(1), attach(tenant_network(2), 2, revision=2))
        report = agent.converge(changed, wait=0.3)
        assert report.signalled == ["net2"] and report.pending == ["network net1"]
        assert time.monotonic() - began < 5.0  # bounded by the waits, not by net1
        assert host.calls("start_dnsmasq").count(("start_dnsmasq", "qdhcp-net1")) == 1  # not started twice
    finally:
        release.set()
    report = agent.converge(changed, wait=None)
    assert report.spawned == ["net1"] and report.pending == []


def test_deleted_network_leaves_nothing(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(merge(tenant_network(1), tenant_network(2)), full=True)
    pid = host.dnsmasq_pid(f"{DHCP}/net1/pid", "net1")
    host.clear()
    report = agent.converge(tenant_network(2))
    assert ("stop_dnsmasq", pid) in host.calls()
    assert ("delete_namespace", "qdhcp-net1") in host.calls()
    assert ("remove_files", f"{DHCP}/net1") in host.calls()
    assert {c[2] for c in host.calls("delete_link")} == {"brqnet1", names.dhcp_outer_name("dhcp1")}
    assert "qdhcp-net1" in report.removed
    assert "qdhcp-net1" not in host.ledger_namespaces and "qdhcp-net2" in host.ledger_namespaces


def test_router_detach_removes_only_that_interface(agent: Reconciler, host: FakeHost) -> None:
    both = attach(attach(merge(tenant_network(1), tenant_network(2)), 1), 2)
    agent.converge(both, full=True)
    host.clear()
    agent.converge(attach(merge(tenant_network(1), tenant_network(2)), 1, revision=9))
    # The router's unit and the fabric link's run side by side: compare as a set.
    assert set(host.calls("delete_link")) == {
        ("delete_link", "qrouter-r1", names.router_port_name("rp2")),
        ("delete_link", None, names.router_outer_name("rp2")),
    }
    # The address-scope rules name each interface (Neutron's steady state): rp2's pair goes.
    assert host.calls("restore_iptables") == [("restore_iptables", "qrouter-r1")]


def test_qdhcp_gets_neutrons_default_route_once(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    assert host.routes["qdhcp-net1"] == (("0.0.0.0/0", ("10.1.0.1",), names.tap_name("dhcp1")),)
    host.clear()
    agent.converge(attach(tenant_network(1), 1))  # only qdhcp's files change; the new qrouter gets its (no) routes
    assert host.calls("ensure_routes") == [("ensure_routes", "qrouter-r1", ())]


def test_router_extra_routes_reach_the_qrouter_and_leave_it(agent: Reconciler, host: FakeHost) -> None:
    snap = attach(tenant_network(1), 1)
    agent.converge(snap, full=True)
    assert host.routes["qrouter-r1"] == ()
    router = dataclasses.replace(snap.routers[RouterId("r1")], routes=(
        HostRoute("192.168.9.0/24", "10.1.0.7"), HostRoute("192.168.9.0/24", "10.1.0.8")))
    host.clear()
    agent.converge(dataclasses.replace(snap, revision=snap.revision + 1, routers={router.id: router}))
    assert host.routes["qrouter-r1"] == (("192.168.9.0/24", ("10.1.0.7", "10.1.0.8"), None),)
    agent.converge(dataclasses.replace(snap, revision=snap.revision + 2))
    assert host.routes["qrouter-r1"] == ()


# --- IPv6: radvd and ip6tables in the qrouter ------------------------------------------------


def _ipv6_router(mode: str = "slaac", revision: int = 3) -> "object":
    """net1 routed by r1, plus an IPv6 subnet on it whose gateway the router holds."""
    from netmeta.model.types import FixedIP, NetworkId, PortId, Subnet, SubnetId

    snap = attach(tenant_network(1), 1)
    sub6 = Subnet(SubnetId("sub6"), NetworkId("net1"), "2001:db8:1::/64", ip_version=6, gateway_ip="2001:db8:1::1",
                  ipv6_ra_mode=mode, ipv6_address_mode=mode)
    rp = snap.ports[PortId("rp1")]
    rp = dataclasses.replace(rp, fixed_ips=rp.fixed_ips + (FixedIP(SubnetId("sub6"), "2001:db8:1::1"),))
    return dataclasses.replace(snap, subnets={**snap.subnets, sub6.id: sub6}, ports={**snap.ports, rp.id: rp},
                               revision=revision)


def test_ipv6_router_gets_radvd_ip6tables_and_forwarding(agent: Reconciler, host: FakeHost) -> None:
    snap = _ipv6_router()
    report = agent.converge(snap, full=True)  # type: ignore[arg-type]
    assert report.failed == {}
    calls = [c[:2] for c in host.calls()]
    assert ("restore_ip6tables", "qrouter-r1") in calls
    assert ("set_sysctl", "qrouter-r1") in calls
    assert ("qrouter-r1", "net.ipv6.conf.all.forwarding", "1") in [c[1:] for c in host.calls("set_sysctl")]
    # radvd after the interfaces, its configuration written first.
    assert calls.index(("start_radvd", "qrouter-r1")) > calls.index(("ensure_veth", "qrouter-r1"))
    conf = host.files[f"{STATE}/ra/r1.radvd.conf"]
    assert "prefix 2001:db8:1::/64" in conf and "AdvAutonomous on;" in conf
    assert "radvd r1" in report.spawned
    host.clear()
    agent.converge(snap)  # type: ignore[arg-type]
    assert host.calls() == []


def test_radvd_is_supervised_reloaded_and_stopped(agent: Reconciler, host: FakeHost) -> None:
    snap = _ipv6_router()
    agent.converge(snap, full=True)  # type: ignore[arg-type]
    pid = host.radvd_pid(f"{STATE}/ra/r1.radvd.pid", "r1")
    assert pid is not None
    # Killed: started again on the next (cheap) pass.
    host.processes.pop(pid)
    host.clear()
    agent.converge(snap)  # type: ignore[arg-type]
    assert [c[0] for c in host.calls("start_radvd", "reload_radvd")] == ["start_radvd"]
    pid = host.radvd_pid(f"{STATE}/ra/r1.radvd.pid", "r1")
    # The mode changes: new configuration, SIGHUP, no restart.
    host.clear()
    agent.converge(_ipv6_router("dhcpv6-stateful", revision=4))  # type: ignore[arg-type]
    assert host.calls("start_radvd", "reload_radvd", "stop_radvd") == [("reload_radvd", pid)]
    assert "AdvManagedFlag on;" in host.files[f"{STATE}/ra/r1.radvd.conf"]
    # The IPv6 subnet leaves the router: radvd stops; the router goes: nothing of it is left.
    host.clear()
    agent.converge(attach(tenant_network(1), 1, revision=5))
    assert host.calls("stop_radvd") == [("stop_radvd", pid)]
    agent.converge(_ipv6_router(revision=6))
    pid = host.radvd_pid(f"{STATE}/ra/r1.radvd.pid", "r1")
    host.clear()
    agent.converge(tenant_network(1, revision=7))
    assert ("stop_radvd", pid) in host.calls()


def test_a_deleted_port_s_lease_is_released_when_dnsmasq_reloads(agent: Reconciler, host: FakeHost) -> None:
    """Neutron's reload_allocations: ``dhcp_release`` every lease no hosts line gives any more."""
    from netmeta.model.dhcp import stale_leases
    from tests.builders import port

    vms = [port(f"vm{i}", "net1", [("sub1", f"10.1.0.{10 + i}")], mac=f"fa:16:3e:00:00:1{i}", device_id=f"i{i}",
                owner="compute:nova") for i in range(2)]
    both = merge(tenant_network(1), world_of(vms), revision=2)
    agent.converge(both, full=True)
    leases = f"{DHCP}/net1/leases"
    host.files[leases] = ("1796257022 fa:16:3e:00:00:10 10.1.0.10 host-10-1-0-10 01:fa:16:3e:00:00:10\n"
                          "1796257022 fa:16:3e:00:00:11 10.1.0.11 host-10-1-0-11 *\n")
    host.clear()
    agent.converge(merge(tenant_network(1), world_of(vms[1:]), revision=3))  # vm0's port deleted
    assert host.calls("release_lease") == [("release_lease", "qdhcp-net1", "tapdhcp1", "10.1.0.10", "fa:16:3e:00:00:10")]
    assert host.calls(*DNSMASQ)[0][0] == "reload_dnsmasq"
    # An address changed under the same MAC is stale too; a lease still in the hosts file is kept.
    hosts = "fa:16:3e:00:00:11,host-10-1-0-12.openstacklocal,10.1.0.12\n"
    assert [lease.ip for lease in stale_leases(host.files[leases], hosts)] == ["10.1.0.10", "10.1.0.11"]
    kept = ("fa:16:3e:00:00:10,host-10-1-0-10.openstacklocal,10.1.0.10,set:port-vm0\n"
            "fa:16:3e:00:00:11,id:01:ab,host-10-1-0-11.openstacklocal,10.1.0.11\n")
    assert stale_leases(host.files[leases], kept) == []


def world_of(ports: list) -> object:  # type: ignore[type-arg]
    from tests.builders import world

    return world(ports=ports)
