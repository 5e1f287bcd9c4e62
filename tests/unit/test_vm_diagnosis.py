"""``netmeta explain`` on a real VM: the pure findings, and the observation through a fake host.

The host side (QEMU's pid file and namespace, the tap on the bridge, dnsmasq's
leases, the console) is read through the agent's :class:`Host` interface, so
``tests/fake_host.py`` stands in for the kernel; the VM side (its route, its
lease file, a fetch) is a fake SSH answer. Each broken link names its cause.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import pytest

from netmeta.cli.explain import VM_COMMANDS, observe_vm
from netmeta.config import Config
from netmeta.drivers.ssh import batch_script, split_batch
from netmeta.model import names
from netmeta.model.dhcp import DhcpLease, parse_dnsmasq_leases
from netmeta.model.vm_diagnosis import (
    VmFacts,
    dhclient_lease_routes,
    explain_vm,
    lease_for,
    offered_path,
)
from netmeta.vm.machines import Machine, MachineError
from tests.fake_host import FakeHost
from tests.unit.test_diagnosis import DHCP_IP, DHCP_NS, GW, NET, ROUTER, VM, VM_IP, VM_PORT, observed, opts, snapshot

MAC = "fa:16:3e:00:00:05"
TAP = names.guest_outer_name(VM_PORT)
BRIDGE = names.bridge_name(NET)
FINAL = ("[  48.1] cloud-init[412]: Cloud-init v. 22.4.2 finished at Wed, 02 Dec 2026 00:01:02 +0000. "
         "Datasource {ds} [net,ver=2].  Up 48.10 seconds\n")


def facts(**kw: Any) -> VmFacts:
    base = VmFacts(
        name="vm1", port_id=VM_PORT, network_id=NET, mac=MAC, ip=VM_IP, tap=TAP, qemu_pid=4242,
        tap_master=BRIDGE, lease=DhcpLease(1796257022, MAC, VM_IP, "vm1"), cloud_init="DataSourceOpenStackLocal",
        uptime=48.1, access=(("network", NET, 42),), ssh="",
    )
    return replace(base, **kw)


def codes(result: Any, severity: str) -> set[str]:
    return {f.code for f in result.findings if f.severity == severity}


def test_a_healthy_vm_on_the_qdhcp_path_is_consistent_with_its_own_view() -> None:
    result = explain_vm(snapshot(routed=False), facts(), observed(DHCP_IP), opts_lines=opts(DHCP_IP))
    assert result.consistent, [f.text for f in result.problems]
    assert result.path == "dhcp" and result.next_hop == DHCP_IP and result.namespace == f"qdhcp-{NET}"
    assert {"port", "qemu", "tap", "lease", "datasource", "served", "route", "route-origin", "next-hop",
            "listener", "identity", "fetch"} <= codes(result, "ok")


def test_without_ssh_the_offered_route_stands_in_and_says_why() -> None:
    result = explain_vm(snapshot(routed=True), facts(access=(("router", ROUTER, 7),), ssh="no host keys yet"),
                        None, opts_lines=opts(GW))
    assert result.consistent and result.path == "router" and result.namespace == f"qrouter-{ROUTER}"
    (note,) = [f for f in result.findings if f.code == "offered-route"]
    assert GW in note.text and "no host keys yet" in note.text


@pytest.mark.parametrize("change, problem, words", [
    (dict(qemu_pid=None, qemu_log="qemu: terminating on signal 15"), "qemu-dead", "signal 15"),
    (dict(qemu_in_fabric=False), "qemu", "another namespace"),
    (dict(tap_master=None), "tap-missing", "cut off"),
    (dict(tap_master=""), "tap-not-on-bridge", "no bridge"),
    (dict(tap_up=False), "tap-not-on-bridge", "down"),
    (dict(lease=None), "no-lease", "never got an address"),
    (dict(lease=None, address_held_by=DhcpLease(1, "fa:16:3e:00:00:77", VM_IP, "old")), "address-leased-elsewhere",
     "still leases 172.31.0.5 to fa:16:3e:00:00:77"),
    (dict(lease=None, cloud_init="DataSourceNone", access=(),
          address_held_by=DhcpLease(1, "fa:16:3e:00:00:77", VM_IP, "old")), "datasource-none",
     "still leased to fa:16:3e:00:00:77"),
    (dict(lease=DhcpLease(1, MAC, "172.31.0.99", "x")), "lease-address", "172.31.0.99"),
    (dict(cloud_init="DataSourceNone", access=()), "datasource-none", "no listener ever answered"),
    (dict(cloud_init="DataSourceNone", lease=None), "datasource-none", "never got a DHCP lease"),
    (dict(cloud_init="DataSourceNone"), "datasource-none", "a listener answered it"),
])
def test_each_broken_link_names_its_cause(change: dict[str, Any], problem: str, words: str) -> None:
    result = explain_vm(snapshot(routed=False), facts(**change), None, opts_lines=opts(DHCP_IP))
    assert not result.consistent
    found = [f for f in result.problems if f.code == problem]
    assert found and words in found[0].text, [f.text for f in result.findings]


def test_datasource_none_on_a_network_without_metadata_says_so() -> None:
    result = explain_vm(snapshot(routed=False), facts(cloud_init="DataSourceNone", access=()), None, opts_lines=())
    (found,) = [f for f in result.problems if f.code == "datasource-none"]
    assert "metadata is off" in found.text


def test_a_booting_vm_is_not_a_fault() -> None:
    result = explain_vm(snapshot(routed=False), facts(cloud_init=None, uptime=None, lease=None, access=(),
                                                      ssh="still booting"), None, opts_lines=opts(DHCP_IP))
    assert result.consistent
    assert {"booting", "no-lease-yet", "served", "offered-route"} <= codes(result, "note")


def test_a_port_gone_from_the_api_or_another_mac() -> None:
    assert codes(explain_vm(snapshot(routed=False), facts(port_id="gone"), None), "problem") == {"port-missing"}
    assert codes(explain_vm(snapshot(routed=False), facts(mac="fa:16:3e:99:99:99"), None), "problem") == {"port-mac"}


def test_served_through_the_old_path_after_a_router_came_is_a_note() -> None:
    result = explain_vm(snapshot(routed=True), facts(), None, opts_lines=opts(GW))
    assert result.consistent and "served-elsewhere" in codes(result, "note")


def test_offered_path_follows_the_opts_file_then_the_gateway() -> None:
    assert offered_path(snapshot(routed=False), NET, opts(DHCP_IP)) == ("dhcp", DHCP_IP)
    assert offered_path(snapshot(routed=True), NET, opts(GW)) == ("router", GW)
    assert offered_path(snapshot(routed=True), NET, ()) == ("router", GW)
    assert offered_path(snapshot(routed=False), NET, ()) == ("none", None)


def test_lease_files() -> None:
    text = ("1796257022 fa:16:3e:00:00:09 172.31.0.9 other *\n"
            "duid 00:01:00:01:2e:aa\n"
            "1796257099 FA:16:3E:00:00:05 172.31.0.5 host-172-31-0-5 ff:3e:00\n")
    assert [l.ip for l in parse_dnsmasq_leases(text)] == ["172.31.0.9", "172.31.0.5"]
    assert lease_for(text, MAC) == DhcpLease(1796257099, MAC, VM_IP, "host-172-31-0-5", "ff:3e:00")
    assert lease_for(text, "fa:16:3e:00:00:01") is None
    dhclient = ("lease {\n  interface \"ens2\";\n  option rfc3442-classless-static-routes 32,169,254,169,254,1,2,3,4;\n}\n"
                "lease {\n  interface \"ens2\";\n  option rfc3442-classless-static-routes 32,169,254,169,254,172,31,0,2;\n}\n")
    assert dhclient_lease_routes(dhclient) == "32,169,254,169,254,172,31,0,2"
    assert dhclient_lease_routes("lease {\n}\n") == ""


def test_batch_over_one_ssh_connection() -> None:
    import subprocess

    script = batch_script({"a": ["printf", "no newline"], "b": ["sh", "-c", "echo \"it's\"; exit 3"], "c": ["true"]})
    out = subprocess.run(script, capture_output=True, text=True, check=True).stdout
    assert split_batch(out) == {"a": (0, "no newline"), "b": (3, "it's\n"), "c": (0, "")}
    assert split_batch(out[: out.index("@@netmeta-end b")]) == {"a": (0, "no newline")}
    with pytest.raises(ValueError):
        batch_script({"not a key": ["true"]})


# --- the observation, through the fake host ------------------------------------------


def machine(tmp: str) -> Machine:
    return Machine(name="vm1", instance_id=VM, port_id=VM_PORT, network_id=NET, mac=MAC, ip=VM_IP,
                   directory=f"{tmp}/machines/vm1", image="debian-12", accel="tcg", tap=TAP, fabric="fabric")


def fake_world(tmp: str) -> tuple[Config, Machine, FakeHost]:
    config = Config(state_dir=tmp)
    vm = machine(tmp)
    host = FakeHost()
    host.ensure_fabric()
    host.namespaces["fabric"] = 7
    host.ensure_bridge(BRIDGE, 1500)
    host.links["fabric"][TAP] = {"kind": "tun", "up": True, "master": BRIDGE, "addresses": set()}
    host.files[vm.pid_file] = "4242\n"
    host.processes[4242] = (("qemu-system-x86_64", "-pidfile", vm.pid_file), 7)
    host.files[vm.console_log] = "Linux version 6.1\n" + FINAL.format(ds="DataSourceOpenStackLocal")
    host.files[config.paths.dhcp_file(NET, "leases")] = f"1796257022 {MAC} {VM_IP} vm1 *\n"
    return config, vm, host


ACCESS = [{"kind": "network", "id": NET, "peer": VM_IP, "count": 42},
          {"kind": "network", "id": NET, "peer": "172.31.0.9", "count": 5}]


def no_ssh(commands: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, str]]:
    raise MachineError("vm1 has not printed its SSH host keys yet")


def test_observing_a_vm_through_the_host(tmp_path: Any) -> None:
    config, vm, host = fake_world(str(tmp_path))
    seen, inside = observe_vm(config, vm, snapshot(routed=False), host, ACCESS, no_ssh)
    assert inside is None and "host keys" in seen.ssh
    assert seen.qemu_pid == 4242 and seen.qemu_in_fabric and seen.tap_master == BRIDGE and seen.tap_up
    assert seen.lease is not None and seen.lease.ip == VM_IP
    assert seen.cloud_init == "DataSourceOpenStackLocal" and seen.uptime == 48.1
    assert seen.access == (("network", NET, 42),)


def test_an_address_another_mac_still_holds_is_seen(tmp_path: Any) -> None:
    config, vm, host = fake_world(str(tmp_path))
    host.files[config.paths.dhcp_file(NET, "leases")] = f"1796257022 fa:16:3e:00:00:77 {VM_IP} gone *\n"
    seen, _ = observe_vm(config, vm, snapshot(routed=False), host, ACCESS, no_ssh)
    assert seen.lease is None and seen.address_held_by is not None and seen.address_held_by.hostname == "gone"


def test_a_pid_file_naming_another_process_is_a_dead_qemu(tmp_path: Any) -> None:
    config, vm, host = fake_world(str(tmp_path))
    host.processes[4242] = (("sleep", "100"), 7)
    asked = []
    seen, inside = observe_vm(config, vm, snapshot(routed=False), host, ACCESS, lambda c: asked.append(c) or {})
    assert seen.qemu_pid is None and inside is None and not asked  # no SSH to a VM that is not there
    assert "qemu-dead" in codes(explain_vm(snapshot(routed=False), seen, inside), "problem")


def test_the_vm_s_own_view_over_ssh_joins_the_guest_chain(tmp_path: Any, monkeypatch: Any) -> None:
    from netmeta.cli import explain as explain_cli

    config, vm, host = fake_world(str(tmp_path))
    monkeypatch.setattr(explain_cli, "_namespace_facts", lambda owner: DHCP_NS)
    monkeypatch.setattr(explain_cli, "_opts_lines", lambda config, net: opts(DHCP_IP))
    answers = {
        "route": (0, f'[{{"dst":"169.254.169.254","gateway":"{DHCP_IP}","dev":"ens2"}}]'),
        "table": (0, f'[{{"dst":"169.254.169.254","gateway":"{DHCP_IP}"}}]'),
        "fetch": (0, '{"uuid": "vm-1"}\n200'),
        "lease": (0, "lease {\n  option rfc3442-classless-static-routes 32,169,254,169,254,172,31,0,2;\n}\n"),
    }
    asked: list[Mapping[str, Sequence[str]]] = []

    def ssh(commands: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, str]]:
        asked.append(commands)
        return answers

    seen, inside = observe_vm(config, vm, snapshot(routed=False), host, ACCESS, ssh)
    assert asked == [VM_COMMANDS] and inside is not None
    assert inside.route_gateway == DHCP_IP and inside.fetch_status == 200
    assert inside.dhcp_routes == "32,169,254,169,254,172,31,0,2"
    result = explain_vm(snapshot(routed=False), seen, inside, opts_lines=opts(DHCP_IP))
    assert result.consistent and result.path == "dhcp" and "fetch" in codes(result, "ok")


def test_a_stopped_vm_s_lease_is_released_as_its_client_would() -> None:
    from netmeta.drivers.dnsmasq import release_argv

    assert release_argv("tapdhcpport-0", VM_IP, MAC, "ff:3e:00") == ["dhcp_release", "tapdhcpport-0", VM_IP, MAC,
                                                                     "ff:3e:00"]
    assert release_argv("tapdhcpport-0", VM_IP, MAC, "*") == ["dhcp_release", "tapdhcpport-0", VM_IP, MAC]
