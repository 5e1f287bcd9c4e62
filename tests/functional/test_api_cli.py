"""The real ``openstack`` CLI and openstacksdk, unchanged, against netmeta.

This is the seed walk (old ``neutron`` CLI spellings translated to OSC:
``--no-gateway`` is ``--gateway none``) with the printed values asserted,
including one plain table as an operator would read it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import ServerProcess

OPENSTACK = Path(sys.executable).with_name("openstack")


def osc(server: ServerProcess, *args: str) -> str:
    return server.openstack(*args).stdout


def osc_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(osc(server, *args, "-f", "json"))


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> dict[str, Any]:
    if not OPENSTACK.exists():
        pytest.skip("the openstack CLI is not installed in this virtualenv")
    out: dict[str, Any] = {}
    out["net"] = osc_json(server, "network", "create", "test-metadata-in-dhcp")
    out["subnet"] = osc_json(
        server, "subnet", "create", "--gateway", "none", "--network", "test-metadata-in-dhcp",
        "--subnet-range", "192.168.111.0/24", "test-metadata-in-dhcp",
    )
    out["net_gw"] = osc_json(server, "network", "create", "test-metadata-in-dhcp-with-gw")
    out["subnet_gw"] = osc_json(
        server, "subnet", "create", "--network", "test-metadata-in-dhcp-with-gw",
        "--subnet-range", "172.31.0.0/24", "test-metadata-in-dhcp-with-gw",
    )
    out["router"] = osc_json(server, "router", "create", "testrouter")
    osc(server, "router", "add", "subnet", "testrouter", "test-metadata-in-dhcp-with-gw")
    return out


def test_created_objects_print_neutron_values(seeded: dict[str, Any]) -> None:
    assert seeded["net"]["name"] == "test-metadata-in-dhcp"
    assert seeded["net"]["status"] == "ACTIVE" and seeded["net"]["mtu"] == 1500
    subnet = seeded["subnet"]
    assert subnet["cidr"] == "192.168.111.0/24"
    assert subnet["gateway_ip"] is None
    assert subnet["allocation_pools"] == [{"start": "192.168.111.1", "end": "192.168.111.254"}]
    assert subnet["enable_dhcp"] is True
    gw = seeded["subnet_gw"]
    assert gw["gateway_ip"] == "172.31.0.1"
    assert gw["allocation_pools"] == [{"start": "172.31.0.2", "end": "172.31.0.254"}]


def test_port_list_shows_dhcp_ports_and_router_interface(server: ServerProcess, seeded: dict[str, Any]) -> None:
    ports = osc_json(server, "port", "list", "--long")
    by_ip = {p["Fixed IP Addresses"][0]["ip_address"]: p for p in ports}
    assert set(by_ip) == {"192.168.111.1", "172.31.0.2", "172.31.0.1"}
    assert by_ip["192.168.111.1"]["Device Owner"] == "network:dhcp"
    assert by_ip["172.31.0.2"]["Device Owner"] == "network:dhcp"
    assert by_ip["172.31.0.1"]["Device Owner"] == "network:router_interface"
    for port in ports:
        assert port["MAC Address"].startswith("fa:16:3e:")
    router_ports = osc_json(server, "port", "list", "--router", "testrouter")
    assert [p["Fixed IP Addresses"][0]["ip_address"] for p in router_ports] == ["172.31.0.1"]


def test_port_list_table_format(server: ServerProcess, seeded: dict[str, Any]) -> None:
    table = osc(server, "port", "list", "--network", "test-metadata-in-dhcp")
    lines = table.splitlines()
    assert lines[0].startswith("+") and "| ID" in lines[1] and "Fixed IP Addresses" in lines[1]
    assert "ip_address='192.168.111.1'" in table
    assert "ACTIVE" in table
    assert len([line for line in lines if line.startswith("| ") and "192.168" in line]) == 1


def test_value_format_and_show(server: ServerProcess, seeded: dict[str, Any]) -> None:
    cidrs = osc(server, "subnet", "list", "-f", "value", "-c", "Subnet").split()
    assert sorted(cidrs) == ["172.31.0.0/24", "192.168.111.0/24"]
    shown = osc_json(server, "router", "show", "testrouter")
    assert shown["name"] == "testrouter" and shown["status"] == "ACTIVE"
    assert [i["ip_address"] for i in shown["interfaces_info"]] == ["172.31.0.1"]
    shown_subnets = osc(server, "network", "show", "-f", "value", "-c", "subnets", "test-metadata-in-dhcp")
    assert shown_subnets.strip() == f"['{seeded['subnet']['id']}']"


def test_remove_interface_and_delete_with_cli(server: ServerProcess, seeded: dict[str, Any]) -> None:
    osc(server, "network", "create", "scratch")
    osc(server, "subnet", "create", "--network", "scratch", "--subnet-range", "10.9.0.0/24", "scratch")
    osc(server, "router", "add", "subnet", "testrouter", "scratch")
    osc(server, "router", "remove", "subnet", "testrouter", "scratch")
    osc(server, "subnet", "set", "--no-dhcp", "scratch")
    ports = osc_json(server, "port", "list", "--network", "scratch")
    assert ports == []
    osc(server, "network", "delete", "scratch")
    names = osc(server, "network", "list", "-f", "value", "-c", "Name").split()
    assert "scratch" not in names


# openstacksdk warns about its own pending removals (PendingDeprecationWarning) on
# ordinary calls; they are not about netmeta.
@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstacksdk(server: ServerProcess, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    openstack = pytest.importorskip("openstack")
    for key, value in server.openstack_env().items():
        monkeypatch.setenv(key, value)
    conn = openstack.connect(cloud="netmeta")  # clouds.yaml password auth, as a user would
    try:
        net = conn.network.find_network("test-metadata-in-dhcp")
        assert net is not None and net.id == seeded["net"]["id"]
        port = conn.network.create_port(network_id=net.id, name="sdk-port",
                                        fixed_ips=[{"ip_address": "192.168.111.50"}])
        assert port.fixed_ips == [{"subnet_id": seeded["subnet"]["id"], "ip_address": "192.168.111.50"}]
        before = port.revision_number
        updated = conn.network.update_port(port, name="renamed")
        assert updated.name == "renamed" and updated.revision_number == before + 1
        found = list(conn.network.ports(fixed_ips=["ip_address=192.168.111.50"]))
        assert [p.id for p in found] == [port.id]
        conn.network.delete_port(port)
        assert conn.network.find_port(port.id) is None
        # openstacksdk's bulk create is Neutron's {"ports": [...]}: one request, every port back in order.
        made = list(conn.network.create_ports([{"network_id": net.id, "name": f"sdk-bulk-{i}"} for i in range(3)]))
        assert [p.name for p in made] == ["sdk-bulk-0", "sdk-bulk-1", "sdk-bulk-2"] and all(p.id for p in made)
        for made_port in made:
            conn.network.delete_port(made_port)
    finally:
        conn.close()
