"""Port security, allowed address pairs and security groups through the API.

First through the real ``openstack`` CLI, as an operator types it; then
every refusal with Neutron's status and type, and the whole state (revision
included) unchanged after it.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.functional.conftest import Api, ServerProcess
from tests.functional.test_api_cli import OPENSTACK, osc, osc_json

World = dict[str, Any]


@pytest.fixture(scope="module")
def cli(server: ServerProcess) -> ServerProcess:
    if not OPENSTACK.exists():
        pytest.skip("the openstack CLI is not installed in this virtualenv")
    osc(server, "network", "create", "sec-net")
    osc(server, "subnet", "create", "--network", "sec-net", "--subnet-range", "10.90.0.0/24", "sec-subnet")
    return server


def test_port_security_is_on_by_default_with_the_default_group(cli: ServerProcess) -> None:
    net = osc_json(cli, "network", "show", "sec-net")
    assert net["port_security_enabled"] is True
    port = osc_json(cli, "port", "create", "--network", "sec-net", "plain")
    assert port["port_security_enabled"] is True
    groups = osc_json(cli, "security", "group", "list")
    default = [g for g in groups if g["Name"] == "default"]
    assert len(default) == 1 and port["security_group_ids"] == [default[0]["ID"]]
    shown = osc_json(cli, "security", "group", "show", default[0]["ID"])
    rules = {(r["direction"], r["ethertype"], r["remote_group_id"]) for r in shown["rules"]}
    assert rules == {("ingress", "IPv4", shown["id"]), ("ingress", "IPv6", shown["id"]),
                     ("egress", "IPv4", None), ("egress", "IPv6", None)}
    # The DHCP port is netmeta's own: trusted, no group.
    dhcp = [p for p in osc_json(cli, "port", "list", "--network", "sec-net", "--long")
            if p["Device Owner"] == "network:dhcp"]
    assert len(dhcp) == 1 and not dhcp[0]["Security Groups"]


def test_groups_and_rules_through_the_cli(cli: ServerProcess) -> None:
    web = osc_json(cli, "security", "group", "create", "--description", "web servers", "web")
    assert web["name"] == "web" and web["description"] == "web servers" and web["stateful"] is True
    assert {(r["direction"], r["ethertype"]) for r in web["rules"]} == {("egress", "IPv4"), ("egress", "IPv6")}
    ssh = osc_json(cli, "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "web")
    assert (ssh["protocol"], ssh["port_range_min"], ssh["port_range_max"]) == ("tcp", 22, 22)
    assert ssh["direction"] == "ingress" and ssh["remote_ip_prefix"] == "0.0.0.0/0"
    ping = osc_json(cli, "security", "group", "rule", "create", "--protocol", "icmp", "--icmp-type", "8",
                    "--remote-ip", "10.90.0.0/24", "web")
    assert (ping["protocol"], ping["port_range_min"], ping["port_range_max"]) == ("icmp", 8, None)
    peers = osc_json(cli, "security", "group", "rule", "create", "--protocol", "112", "--remote-group", "web",
                     "web")
    assert peers["protocol"] == "112" and peers["remote_group_id"] == web["id"]
    listed = osc_json(cli, "security", "group", "rule", "list", "web")
    assert {r["ID"] for r in listed} >= {ssh["id"], ping["id"], peers["id"]}
    port = osc_json(cli, "port", "create", "--network", "sec-net", "--security-group", "web", "webport")
    assert port["security_group_ids"] == [web["id"]]
    osc(cli, "security", "group", "rule", "delete", ping["id"])
    assert ping["id"] not in {r["ID"] for r in osc_json(cli, "security", "group", "rule", "list", "web")}
    osc(cli, "port", "set", "--no-security-group", "webport")
    assert osc_json(cli, "port", "show", "webport")["security_group_ids"] == []
    osc(cli, "port", "set", "--security-group", "web", "webport")
    assert osc_json(cli, "port", "show", "webport")["security_group_ids"] == [web["id"]]
    osc(cli, "port", "delete", "webport")
    osc(cli, "security", "group", "delete", "web")
    assert "web" not in {g["Name"] for g in osc_json(cli, "security", "group", "list")}


def test_disable_port_security_and_address_pairs_through_the_cli(cli: ServerProcess) -> None:
    open_port = osc_json(cli, "port", "create", "--network", "sec-net", "--disable-port-security",
                         "--no-security-group", "open")
    assert open_port["port_security_enabled"] is False and open_port["security_group_ids"] == []
    pairs = osc_json(cli, "port", "create", "--network", "sec-net", "--allowed-address", "ip-address=10.90.0.200",
                     "--allowed-address", "ip-address=10.90.1.0/24,mac-address=fa:16:3e:11:22:33", "pairs")
    assert pairs["allowed_address_pairs"] == [
        {"ip_address": "10.90.0.200", "mac_address": pairs["mac_address"]},
        {"ip_address": "10.90.1.0/24", "mac_address": "fa:16:3e:11:22:33"},
    ]
    osc(cli, "port", "set", "--no-allowed-address", "--no-security-group", "--disable-port-security", "pairs")
    shown = osc_json(cli, "port", "show", "pairs")
    assert shown["port_security_enabled"] is False and shown["allowed_address_pairs"] == []
    osc(cli, "port", "set", "--enable-port-security", "--security-group", "default", "pairs")
    assert osc_json(cli, "port", "show", "pairs")["port_security_enabled"] is True
    # A network with port security off makes ports without it, and no group.
    osc(cli, "network", "create", "--disable-port-security", "open-net")
    osc(cli, "subnet", "create", "--network", "open-net", "--subnet-range", "10.91.0.0/24", "open-subnet")
    free = osc_json(cli, "port", "create", "--network", "open-net", "free")
    assert free["port_security_enabled"] is False and free["security_group_ids"] == []


# --- refusals ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> World:
    api: Api = server.api
    w: World = {}
    w["net"] = api.network("sec-errors-net")
    w["subnet"] = api.subnet(w["net"]["id"], "10.92.0.0/24")
    w["port"] = api.port(w["net"]["id"], fixed_ips=[{"ip_address": "10.92.0.10"}])
    w["open"] = api.port(w["net"]["id"], port_security_enabled=False)
    w["group"] = api.post("/v2.0/security-groups", {"security_group": {"name": "errs"}})["security_group"]
    w["rule"] = api.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": w["group"]["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 80, "port_range_max": 80}})["security_group_rule"]
    groups = api.get("/v2.0/security-groups")["security_groups"]
    w["default"] = next(g for g in groups if g["name"] == "default" and g["project_id"] == w["net"]["project_id"])
    w["other"] = api.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "theirs"}},
                        headers={"X-Project-Id": "someone-else"})["security_group"]
    w["used"] = api.post("/v2.0/security-groups", {"security_group": {"name": "used"}})["security_group"]
    api.ok("PUT", f"/v2.0/ports/{w['port']['id']}", {"port": {"security_groups": [w["used"]["id"]]}})
    return w


MISSING = "00000000-0000-4000-8000-000000000000"


def _rule(**fields: Any) -> Callable[[World], Any]:
    return lambda w: {"security_group_rule": {"security_group_id": w["group"]["id"], "direction": "ingress",
                                              **fields}}


def _port(path_key: str, **fields: Any) -> tuple[Callable[[World], str], Callable[[World], Any]]:
    return (lambda w: f"/v2.0/ports/{w[path_key]['id']}"), (lambda w: {"port": fields})


def _pairs(*pairs: dict[str, str]) -> dict[str, Any]:
    return {"allowed_address_pairs": list(pairs)}


CASES: list[tuple[str, str, Any, Any, int, str]] = [
    ("groups on a port without port security", "PUT", *_port("open", security_groups=[]), 200, ""),
    ("group with port security off", "PUT",
     lambda w: f"/v2.0/ports/{w['open']['id']}", lambda w: {"port": {"security_groups": [w["group"]["id"]]}},
     400, "PortSecurityAndIPRequiredForSecurityGroups"),
    ("group and port security off in one request", "POST", lambda w: "/v2.0/ports",
     lambda w: {"port": {"network_id": w["net"]["id"], "port_security_enabled": False,
                         "security_groups": [w["group"]["id"]]}}, 400, "PortSecurityAndIPRequiredForSecurityGroups"),
    ("port security off while groups remain", "PUT", *_port("port", port_security_enabled=False),
     409, "PortSecurityPortHasSecurityGroup"),
    ("address pairs without port security", "PUT", *_port("open", **_pairs({"ip_address": "10.92.0.99"})),
     409, "AddressPairAndPortSecurityRequired"),
    ("address pairs and port security off together", "PUT",
     *_port("port", security_groups=[], port_security_enabled=False, **_pairs({"ip_address": "10.92.0.99"})),
     409, "AddressPairAndPortSecurityRequired"),
    ("address pair without ip", "PUT", *_port("port", **_pairs({"mac_address": "fa:16:3e:00:00:01"})),
     400, "AllowedAddressPairsMissingIP"),
    ("address pair garbage ip", "PUT", *_port("port", **_pairs({"ip_address": "10.92.0.300"})), 400, "InvalidInput"),
    ("address pair bad mac", "PUT", *_port("port", **_pairs({"ip_address": "10.92.0.9", "mac_address": "zz"})),
     400, "InvalidInput"),
    ("duplicate address pair", "PUT", *_port("port", **_pairs({"ip_address": "10.92.0.9"}, {"ip_address": "10.92.0.9"})),
     400, "DuplicateAddressPairInRequest"),
    ("address pair is the port itself", "PUT", *_port("port", **_pairs({"ip_address": "10.92.0.10"})),
     400, "AddressPairMatchesPortFixedIPAndMac"),
    ("too many address pairs", "PUT", *_port("port", **_pairs(*({"ip_address": f"10.93.0.{i}"} for i in range(11)))),
     400, "AllowedAddressPairExhausted"),
    ("address pairs not a list", "PUT", *_port("port", allowed_address_pairs="10.0.0.1"), 400, "InvalidInput"),
    ("missing group on a port", "PUT", *_port("port", security_groups=[MISSING]), 404, "SecurityGroupNotFound"),
    ("another project's group on a port", "PUT",
     lambda w: f"/v2.0/ports/{w['port']['id']}", lambda w: {"port": {"security_groups": [w["other"]["id"]]}},
     404, "SecurityGroupNotFound"),
    ("groups not a list", "PUT", *_port("port", security_groups="default"), 400, "InvalidInput"),
    ("second default group", "POST", lambda w: "/v2.0/security-groups",
     {"security_group": {"name": "default"}}, 409, "SecurityGroupDefaultAlreadyExists"),
    ("rename the default group", "PUT", lambda w: f"/v2.0/security-groups/{w['default']['id']}",
     {"security_group": {"name": "mine"}}, 409, "SecurityGroupCannotUpdateDefault"),
    ("delete the default group", "DELETE", lambda w: f"/v2.0/security-groups/{w['default']['id']}", None,
     409, "SecurityGroupCannotRemoveDefault"),
    ("delete a group in use", "DELETE", lambda w: f"/v2.0/security-groups/{w['used']['id']}", None,
     409, "SecurityGroupInUse"),
    ("unknown group attribute", "POST", lambda w: "/v2.0/security-groups",
     {"security_group": {"name": "x", "colour": "red"}}, 400, "HTTPBadRequest"),
    ("stateless group", "POST", lambda w: "/v2.0/security-groups",
     {"security_group": {"name": "x", "stateful": False}}, 400, "InvalidInput"),
    ("show missing group", "GET", lambda w: f"/v2.0/security-groups/{MISSING}", None, 404, "SecurityGroupNotFound"),
    ("delete missing rule", "DELETE", lambda w: f"/v2.0/security-group-rules/{MISSING}", None,
     404, "SecurityGroupRuleNotFound"),
    ("rule on missing group", "POST", lambda w: "/v2.0/security-group-rules",
     {"security_group_rule": {"security_group_id": MISSING, "direction": "ingress"}}, 404, "SecurityGroupNotFound"),
    ("rule bad direction", "POST", lambda w: "/v2.0/security-group-rules", _rule(direction="sideways"),
     400, "InvalidInput"),
    ("rule bad ethertype", "POST", lambda w: "/v2.0/security-group-rules", _rule(ethertype="IPX"), 400, "InvalidInput"),
    ("rule bad protocol", "POST", lambda w: "/v2.0/security-group-rules", _rule(protocol="tcpp"),
     400, "SecurityGroupRuleInvalidProtocol"),
    ("rule protocol 256", "POST", lambda w: "/v2.0/security-group-rules", _rule(protocol="256"),
     400, "SecurityGroupRuleInvalidProtocol"),
    ("rule ports without protocol", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(port_range_min=22, port_range_max=22), 400, "SecurityGroupProtocolRequiredWithPorts"),
    ("rule min above max", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="tcp", port_range_min=90, port_range_max=80), 400, "SecurityGroupInvalidPortRange"),
    ("rule port 70000", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="udp", port_range_min=1, port_range_max=70000), 400, "SecurityGroupInvalidPortValue"),
    ("rule port zero", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="tcp", port_range_min=0, port_range_max=10), 400, "SecurityGroupInvalidPortValue"),
    ("rule icmp type 300", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="icmp", port_range_min=300), 400, "SecurityGroupInvalidIcmpValue"),
    ("rule icmp code without type", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="icmp", port_range_max=0), 400, "SecurityGroupMissingIcmpType"),
    ("rule ports for gre", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="gre", port_range_min=1, port_range_max=2), 400, "SecurityGroupInvalidProtocolForPort"),
    ("rule prefix and group", "POST", lambda w: "/v2.0/security-group-rules",
     lambda w: _rule(remote_ip_prefix="10.0.0.0/8", remote_group_id=w["group"]["id"])(w),
     400, "SecurityGroupRemoteGroupAndRemoteIpPrefix"),
    ("rule prefix of the other family", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(remote_ip_prefix="fd00::/64"), 400, "SecurityGroupRuleParameterConflict"),
    ("rule garbage prefix", "POST", lambda w: "/v2.0/security-group-rules", _rule(remote_ip_prefix="10.0.0.0/40"),
     400, "InvalidCIDR"),
    ("rule icmpv6 on IPv4", "POST", lambda w: "/v2.0/security-group-rules", _rule(protocol="ipv6-icmp"),
     400, "SecurityGroupEthertypeConflictWithProtocol"),
    ("rule missing remote group", "POST", lambda w: "/v2.0/security-group-rules", _rule(remote_group_id=MISSING),
     404, "SecurityGroupNotFound"),
    ("duplicate rule", "POST", lambda w: "/v2.0/security-group-rules",
     _rule(protocol="6", port_range_min=80, port_range_max=80), 409, "SecurityGroupRuleExists"),
    ("rule unknown attribute", "POST", lambda w: "/v2.0/security-group-rules", _rule(colour="red"),
     400, "HTTPBadRequest"),
]


@pytest.mark.parametrize("name, method, path, body, status, type_", [c for c in CASES if c[4] >= 400],
                         ids=[c[0] for c in CASES if c[4] >= 400])
def test_refusal_changes_nothing(api: Api, world: World, name: str, method: str, path: Callable[[World], str],
                                 body: Any, status: int, type_: str) -> None:
    before = api.state()
    payload = body(world) if callable(body) else body
    got, result = api.call(method, path(world), payload)
    assert (got, result["NeutronError"]["type"]) == (status, type_), result
    assert set(result["NeutronError"]) == {"type", "message", "detail"}
    assert api.state() == before


def test_duplicate_rule_names_the_existing_one(api: Api, world: World) -> None:
    _, result = api.call("POST", "/v2.0/security-group-rules",
                         _rule(protocol="tcp", port_range_min=80, port_range_max=80)(world))
    assert result["NeutronError"]["message"] == f"Security group rule already exists. Rule id is {world['rule']['id']}."


def test_rule_changes_revise_their_group_and_reach_the_feed(api: Api, world: World) -> None:
    before = api.get(f"/v2.0/security-groups/{world['group']['id']}")["security_group"]
    rule = api.post("/v2.0/security-group-rules", _rule(protocol="udp", port_range_min=53)(world))
    rule = rule["security_group_rule"]
    assert rule["port_range_max"] == 53  # Neutron fills max from min for port protocols
    after = api.get(f"/v2.0/security-groups/{world['group']['id']}")["security_group"]
    assert after["revision_number"] == before["revision_number"] + 1
    assert rule["id"] in {r["id"] for r in after["security_group_rules"]}
    in_state = next(g for g in api.state()["security_groups"] if g["id"] == world["group"]["id"])
    assert in_state == after
    api.ok("DELETE", f"/v2.0/security-group-rules/{rule['id']}")
    assert rule["id"] not in {r["id"] for r in
                              api.get(f"/v2.0/security-groups/{world['group']['id']}")["security_group"][
                                  "security_group_rules"]}


def test_deleting_a_group_drops_rules_that_name_it(api: Api, world: World) -> None:
    target = api.post("/v2.0/security-groups", {"security_group": {"name": "target"}})["security_group"]
    rule = api.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": world["group"]["id"], "direction": "ingress", "remote_group_id": target["id"]}})
    api.ok("DELETE", f"/v2.0/security-groups/{target['id']}")
    status, _ = api.call("GET", f"/v2.0/security-group-rules/{rule['security_group_rule']['id']}")
    assert status == 404
