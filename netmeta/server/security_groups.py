"""Security groups and their rules, with Neutron's fields, defaults and refusals.

Storage: a group is one document that also embeds its rules
(``security_group_rules``, as Neutron shows them); each rule is also a
document of its own in ``security_group_rules`` so it has an id to show and
delete. Every rule change saves the group too, which bumps the group's
``revision_number`` (Neutron's rules "revise on change" of their group) and,
more importantly, puts the complete group in the change feed: the agent
reads groups only, never rule events.

The per-project ``default`` group is made on first use — the first list of
groups by the project, the first port that needs it, the first group or
rule the project creates — as Neutron does: ingress from members of the
same group and all egress, for IPv4 and IPv6. It cannot be renamed or
deleted (409 ``SecurityGroupCannotUpdateDefault`` /
``SecurityGroupCannotRemoveDefault``), and no other group may be called
``default`` (409 ``SecurityGroupDefaultAlreadyExists``).

Rules are validated the way Neutron's ``securitygroups_db`` does: protocol by
name or number 0–255 (``any`` means all); port ranges only with a protocol
that has ports, ``min <= max``, not 0; for ICMP the range is type/code
0–255 and a code needs a type; ``remote_ip_prefix`` and ``remote_group_id``
exclusive, the prefix's family equal to ``ethertype``; a duplicate of an
existing rule is 409 ``SecurityGroupRuleExists`` naming it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netmeta.model.types import PROTOCOL_NUMBERS, protocol_number
from netmeta.server.errors import BadRequest, Conflict, NotFound, invalid
from netmeta.server.standard_attrs import Caller, base, create, new_id, save
from netmeta.server.validation import as_str, common_attrs, project_of
from netmeta.store.database import Txn

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"

PROTOCOLS = PROTOCOL_NUMBERS
PORT_PROTOCOLS = {6, 17, 33, 132, 136}  # tcp, udp, dccp, sctp, udplite
ICMP_PROTOCOLS = {1, 58}
ETHERTYPES = ("IPv4", "IPv6")
RULE_CREATE = {"security_group_id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max",
               "remote_ip_prefix", "remote_group_id", "remote_address_group_id", "description", "project_id",
               "tenant_id"}
GROUP_CREATE = {"name", "description", "project_id", "tenant_id", "stateful", "tags"}
GROUP_UPDATE = {"name", "description", "stateful", "tags"}


def group_not_found(group_id: str) -> NotFound:
    return NotFound(f"Security group {group_id} does not exist", "SecurityGroupNotFound")


def _body(raw: object, key: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict) or key not in raw or len(raw) != 1 or not isinstance(raw[key], dict):
        raise BadRequest(f"Resource body required, expected an object with key '{key}'.", "HTTPBadRequest")
    body: dict[str, Any] = dict(raw[key])
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    return body


def group_body(raw: object, creating: bool) -> dict[str, Any]:
    return _body(raw, "security_group", GROUP_CREATE if creating else GROUP_UPDATE)


def rule_body(raw: object) -> dict[str, Any]:
    return _body(raw, "security_group_rule", RULE_CREATE)


# --- groups ----------------------------------------------------------------------


def _new_group(txn: Txn, project: str, name: str, description: str) -> dict[str, Any]:
    obj = base(new_id(), project, txn.now)
    obj.update({"name": name, "description": description, "stateful": True, "shared": False,
                "security_group_rules": []})
    return obj


def _rule(txn: Txn, group: dict[str, Any], **fields: Any) -> dict[str, Any]:
    obj = base(new_id(), group["project_id"], txn.now)
    del obj["name"], obj["tags"]
    obj.update({"security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4",
                "protocol": None, "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
                "normalized_cidr": None, "remote_group_id": None, "remote_address_group_id": None,
                "belongs_to_default_sg": group["name"] == DEFAULT_NAME})
    obj.update(fields)
    return obj


def _attach_rule(txn: Txn, group: dict[str, Any], rule: dict[str, Any]) -> None:
    create(txn, "security_group_rules", rule)
    group["security_group_rules"] = [*group["security_group_rules"], rule]


def default_group(txn: Txn, project: str) -> dict[str, Any]:
    """The project's ``default`` group, made (with Neutron's four rules) if missing."""
    for group in txn.select("security_groups", project_id=project):
        if group["name"] == DEFAULT_NAME:
            return group
    group = _new_group(txn, project, DEFAULT_NAME, DEFAULT_DESCRIPTION)
    create(txn, "security_groups", group)
    for ethertype in ETHERTYPES:
        _attach_rule(txn, group, _rule(txn, group, direction="ingress", ethertype=ethertype,
                                       remote_group_id=group["id"]))
        _attach_rule(txn, group, _rule(txn, group, direction="egress", ethertype=ethertype))
    return save(txn, "security_groups", group)


def _check_name(name: object) -> None:
    if name == DEFAULT_NAME:
        raise Conflict("Default security group already exists.", "SecurityGroupDefaultAlreadyExists")


def create_group(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    project = project_of(body, caller.project_id, caller.project_id)
    _check_name(body.get("name"))
    default_group(txn, project)
    group = _new_group(txn, project, "", "")
    common_attrs(group, body)
    if "stateful" in body:
        group["stateful"] = _stateful(body["stateful"])
    create(txn, "security_groups", group)
    # Neutron gives every new group the two "all egress" rules.
    for ethertype in ETHERTYPES:
        _attach_rule(txn, group, _rule(txn, group, direction="egress", ethertype=ethertype))
    return save(txn, "security_groups", group)


def _stateful(value: object) -> bool:
    if value is not True:
        # Stateless groups would need the reply direction spelled out in rules;
        # netmeta enforces with conntrack only. Refuse rather than pretend.
        raise invalid("stateful=False is not supported by this netmeta; security groups are stateful")
    return True


def get_group(txn: Txn, group_id: str) -> dict[str, Any]:
    group = txn.get("security_groups", group_id)
    if group is None:
        raise group_not_found(group_id)
    return group


def update_group(txn: Txn, group_id: str, body: dict[str, Any]) -> dict[str, Any]:
    group = get_group(txn, group_id)
    if group["name"] == DEFAULT_NAME and "name" in body and body["name"] != DEFAULT_NAME:
        raise Conflict("Updating default security group not allowed.", "SecurityGroupCannotUpdateDefault")
    if group["name"] != DEFAULT_NAME:
        _check_name(body.get("name"))
    common_attrs(group, body)
    if "stateful" in body:
        group["stateful"] = _stateful(body["stateful"])
    return save(txn, "security_groups", group)


def delete_group(txn: Txn, group_id: str) -> None:
    group = get_group(txn, group_id)
    if group["name"] == DEFAULT_NAME:
        raise Conflict("Removing default security group not allowed.", "SecurityGroupCannotRemoveDefault")
    if any(group_id in (p.get("security_groups") or ()) for p in txn.select("ports")):
        raise Conflict(f"Security Group {group_id} in use.", "SecurityGroupInUse")
    # Rules elsewhere that name this group as their remote go with it (Neutron's
    # foreign key cascades the same way).
    for other in txn.select("security_groups"):
        if other["id"] == group_id:
            continue
        kept = [r for r in other["security_group_rules"] if r.get("remote_group_id") != group_id]
        if len(kept) != len(other["security_group_rules"]):
            for rule in other["security_group_rules"]:
                if rule.get("remote_group_id") == group_id:
                    txn.remove("security_group_rules", rule)
            other["security_group_rules"] = kept
            save(txn, "security_groups", other)
    for rule in group["security_group_rules"]:
        txn.remove("security_group_rules", rule)
    txn.remove("security_groups", group)


# --- rules -------------------------------------------------------------------------


def _protocol(value: object) -> tuple[str | None, int | None]:
    """(stored value, number) — stored as given (lower-cased name or digits)."""
    if value is None or (isinstance(value, str) and value.lower() in ("", "any")):
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        name = value.lower()
        if name in PROTOCOLS:
            return name, PROTOCOLS[name]
        if name.isdigit() and 0 <= int(name) <= 255:
            return str(int(name)), int(name)
    raise BadRequest(
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"{[None, *sorted(PROTOCOLS)]} and integer representations [0 to 255] are supported.",
        "SecurityGroupRuleInvalidProtocol",
    )


def _port(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"Invalid value for port {value}.", "SecurityGroupInvalidPortValue")
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequest(f"Invalid value for port {value}.", "SecurityGroupInvalidPortValue") from exc
    if not 0 <= number <= 65535:
        raise BadRequest(f"Invalid value for port {value}.", "SecurityGroupInvalidPortValue")
    return number


def _ranges(number: int | None, low: int | None, high: int | None, ethertype: str) -> None:
    if low is None and high is None:
        return
    if number is None:
        raise BadRequest("Must also specify protocol if port range is given.",
                         "SecurityGroupProtocolRequiredWithPorts")
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise BadRequest("Invalid value for port 0.", "SecurityGroupInvalidPortValue")
        if low is None or (high is not None and low > high):
            raise BadRequest("For TCP/UDP protocols, port_range_min must be <= port_range_max",
                             "SecurityGroupInvalidPortRange")
        return
    if number in ICMP_PROTOCOLS:
        for field, attr, value in (("type", "port_range_min", low), ("code", "port_range_max", high)):
            if value is not None and not 0 <= value <= 255:
                raise BadRequest(f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                                 "SecurityGroupInvalidIcmpValue")
        if low is None and high is not None:
            raise BadRequest(f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) "
                             f"is missing.", "SecurityGroupMissingIcmpType")
        return
    raise BadRequest(f"Ports cannot be specified for protocol {number}.", "SecurityGroupInvalidProtocolForPort")


def _same_rule(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("direction", "ethertype", "port_range_min", "port_range_max", "remote_group_id",
            "normalized_cidr", "remote_address_group_id")
    return all(a.get(k) == b.get(k) for k in keys) and \
        protocol_number(a.get("protocol")) == protocol_number(b.get("protocol"))


def create_rule(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group_id = as_str(body.get("security_group_id"), "security_group_id", allow_none=True)
    if not group_id:
        raise invalid("security_group_id is required to create a security group rule")
    direction = body.get("direction")
    if direction not in ("ingress", "egress"):
        raise BadRequest(f"Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress'].",
                         "InvalidInput")
    raw_ethertype = body.get("ethertype", "IPv4")
    ethertype = next((e for e in ETHERTYPES if isinstance(raw_ethertype, str) and e.lower() == raw_ethertype.lower()),
                     None)
    if ethertype is None:
        raise BadRequest(f"Invalid input for ethertype. Reason: '{raw_ethertype}' is not in ['IPv4', 'IPv6'].",
                         "InvalidInput")
    protocol, number = _protocol(body.get("protocol"))
    if number == 58 and ethertype == "IPv4":
        raise BadRequest(f"Invalid ethertype {ethertype} for protocol {protocol}.",
                         "SecurityGroupEthertypeConflictWithProtocol")
    low = _port(body.get("port_range_min"), "port_range_min")
    high = _port(body.get("port_range_max"), "port_range_max")
    _ranges(number, low, high, ethertype)
    if number in PORT_PROTOCOLS and low is not None and high is None:
        high = low
    prefix = body.get("remote_ip_prefix")
    remote_group = body.get("remote_group_id")
    if prefix is not None and remote_group is not None:
        raise BadRequest("Only remote_ip_prefix or remote_group_id may be provided.",
                         "SecurityGroupRemoteGroupAndRemoteIpPrefix")
    if body.get("remote_address_group_id") is not None:
        raise BadRequest("Address groups are not supported by this netmeta.", "InvalidInput")
    normalized = None
    if prefix is not None:
        if not isinstance(prefix, str):
            raise BadRequest(f"Invalid CIDR {prefix!r} for IP prefix.", "InvalidCIDR")
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError as exc:
            raise BadRequest(f"Invalid CIDR {prefix} for IP prefix.", "InvalidCIDR") from exc
        if f"IPv{network.version}" != ethertype:
            raise BadRequest(f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
                             "SecurityGroupRuleParameterConflict")
        normalized = str(network)
        if "/" not in prefix:
            prefix = normalized
    group = get_group(txn, group_id)
    if remote_group is not None:
        remote_group = as_str(remote_group, "remote_group_id")
        assert remote_group is not None
        get_group(txn, remote_group)
    project = project_of(body, group["project_id"], group["project_id"])
    description = as_str(body.get("description", ""), "description") or ""
    rule = _rule(txn, group, direction=direction, ethertype=ethertype, protocol=protocol, port_range_min=low,
                 port_range_max=high, remote_ip_prefix=prefix, normalized_cidr=normalized,
                 remote_group_id=remote_group, description=description, project_id=project, tenant_id=project)
    for existing in group["security_group_rules"]:
        if _same_rule(existing, rule):
            raise Conflict(f"Security group rule already exists. Rule id is {existing['id']}.",
                           "SecurityGroupRuleExists")
    _attach_rule(txn, group, rule)
    save(txn, "security_groups", group)
    return rule


def get_rule(txn: Txn, rule_id: str) -> dict[str, Any]:
    rule = txn.get("security_group_rules", rule_id)
    if rule is None:
        raise NotFound(f"Security group rule {rule_id} does not exist", "SecurityGroupRuleNotFound")
    return rule


def delete_rule(txn: Txn, rule_id: str) -> None:
    rule = get_rule(txn, rule_id)
    group = get_group(txn, rule["security_group_id"])
    group["security_group_rules"] = [r for r in group["security_group_rules"] if r["id"] != rule_id]
    txn.remove("security_group_rules", rule)
    save(txn, "security_groups", group)
