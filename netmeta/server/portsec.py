"""A port's ``port_security_enabled``, ``allowed_address_pairs`` and ``security_groups``.

The three are checked together, after the port's fixed IPs are known,
because Neutron's refusals depend on all of them at once:

* groups need port security and an address: 400
  ``PortSecurityAndIPRequiredForSecurityGroups`` when a request asks for
  both "off" and groups; 409 ``PortSecurityPortHasSecurityGroup`` when port
  security is turned off while groups from before are still on the port
  (``openstack port set --no-security-group --disable-port-security`` does
  both in one request);
* address pairs need port security: 409 ``AddressPairAndPortSecurityRequired``;
* a new port with port security on and no ``security_groups`` in the request
  gets its project's ``default`` group (made on first use); ports owned by
  ``network:*`` (DHCP, router interfaces) are netmeta's own, are trusted by
  the fabric and get no group, as in Neutron.

An address pair is ``{"ip_address": <address or CIDR>, "mac_address": <MAC,
default the port's>}``; at most 10 per port (Neutron's
``max_allowed_address_pair``), no duplicates, and not just the port's own
fixed IP and MAC again.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netmeta.model import ipam
from netmeta.server import security_groups as sg
from netmeta.server.errors import BadRequest, Conflict, invalid
from netmeta.store.database import Txn

MAX_ADDRESS_PAIRS = 10


def trusted(port: dict[str, Any]) -> bool:
    """netmeta's own ports (DHCP, router interfaces): never filtered."""
    return str(port.get("device_owner") or "").startswith("network:")


def _pairs(raw: object, port: dict[str, Any]) -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid(f"'{raw}' is not a list of allowed address pairs")
    if len(raw) > MAX_ADDRESS_PAIRS:
        raise BadRequest(f"The number of allowed address pair exceeds the maximum {MAX_ADDRESS_PAIRS}.",
                         "AllowedAddressPairExhausted")
    fixed = {f["ip_address"] for f in port["fixed_ips"]}
    out: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or "ip_address" not in item:
            raise BadRequest("AllowedAddressPair must contain ip_address", "AllowedAddressPairsMissingIP")
        unknown = sorted(set(item) - {"ip_address", "mac_address"})
        if unknown:
            raise invalid(f"Unrecognized attribute(s) '{', '.join(unknown)}' in an allowed address pair")
        ip = item["ip_address"]
        try:
            if not isinstance(ip, str):
                raise ValueError(ip)
            ipaddress.ip_network(ip, strict=False)
        except ValueError as exc:
            raise invalid(f"'{ip}' is neither a valid IP address, nor is it a valid IP subnet") from exc
        mac = item.get("mac_address") or port["mac_address"]
        try:
            mac = ipam.validate_mac(mac)
        except ipam.IpamError as exc:
            raise invalid(str(exc)) from exc
        pair = {"ip_address": ip, "mac_address": mac}
        if pair in out:
            raise BadRequest(f"Request contains duplicate address pair: mac_address {mac} ip_address {ip}.",
                             "DuplicateAddressPairInRequest")
        if mac == port["mac_address"] and ip in fixed:
            raise BadRequest("Port's Fixed IP and Mac Address match an address pair entry.",
                             "AddressPairMatchesPortFixedIPAndMac")
        out.append(pair)
    return out


def _groups(txn: Txn, raw: object, port: dict[str, Any]) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
        raise invalid(f"'{raw}' is not a list of security group ids")
    out: list[str] = []
    for group_id in raw:
        group = txn.get("security_groups", group_id)
        # Another project's group is as absent as a missing one (Neutron hides it).
        if group is None or group["project_id"] != port["project_id"]:
            raise sg.group_not_found(group_id)
        if group_id not in out:
            out.append(group_id)
    return out


def apply(txn: Txn, port: dict[str, Any], body: dict[str, Any], creating: bool) -> None:
    """Validate and set the port's security attributes from ``body`` (see module doc)."""
    enabled = bool(port["port_security_enabled"])
    if "allowed_address_pairs" in body:
        port["allowed_address_pairs"] = _pairs(body["allowed_address_pairs"], port)
    if "security_groups" in body:
        groups = _groups(txn, body["security_groups"], port)
        if groups and (not enabled or not port["fixed_ips"]):
            raise BadRequest("Port security must be enabled and port must have an IP address in order to use "
                             "security groups.", "PortSecurityAndIPRequiredForSecurityGroups")
        port["security_groups"] = groups
    elif creating and enabled and port["fixed_ips"] and not trusted(port):
        port["security_groups"] = [sg.default_group(txn, port["project_id"])["id"]]
    if not enabled and port["security_groups"]:
        raise Conflict("Port has security group associated. Cannot disable port security or ip address until "
                       "security group is removed", "PortSecurityPortHasSecurityGroup")
    if not enabled and port["allowed_address_pairs"]:
        raise Conflict("Port Security must be enabled in order to have allowed address pairs on a port.",
                       "AddressPairAndPortSecurityRequired")
