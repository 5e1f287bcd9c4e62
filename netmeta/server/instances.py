"""Instances: netmeta's own stand-in for Nova's servers.

An instance is what the metadata service answers about: name, hostname,
user data, keys, ``meta``. Creating one creates or binds its ports in the
same transaction (``device_id`` = instance id, ``device_owner`` =
``compute:<az>``), which is how the metadata process finds the instance from
a guest's source address, exactly as Neutron's metadata agent finds it
through the port.

Limits are Nova's: user data at most 64 KiB once decoded, ``meta`` at most
128 items with keys of ``[a-zA-Z0-9-_:. ]`` (1-255) and values of at most 255
characters, a hostname of DNS labels (at most 63 characters), and a password
(``/openstack/latest/password``) of at most 1020 bytes that can be set once
until cleared.

Ports bound from the request (``{"port": id}``) are unbound on delete,
ports the instance made are deleted; which is which lives in the private
``_created_ports`` field, never shown by the API (see :func:`public`).
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from typing import Any

from netmeta.model.types import COMPUTE_OWNER_PREFIX
from netmeta.server import addresses
from netmeta.server.errors import BadRequest, Conflict, Forbidden, invalid
from netmeta.server import portsec
from netmeta.server.ports import new_port, remove_port
from netmeta.server.standard_attrs import Caller, create, get_or_404, new_id, save
from netmeta.server.bodies import check_name
from netmeta.server.validation import as_dns_name, as_str, project_of
from netmeta.store.database import Txn

USER_DATA_MAX = 64 * 1024
META_MAX_ITEMS = 128
PASSWORD_MAX = 1020
META_KEY = re.compile(r"[a-zA-Z0-9\-_:. ]{1,255}")  # Nova's metadata key pattern
ALLOWED = {"name", "hostname", "project_id", "tenant_id", "availability_zone", "flavor", "user_data",
           "key_name", "public_key", "meta", "networks", "host"}


def sanitize_hostname(name: str, instance_id: str) -> str:
    """Nova's hostname for a display name (``nova.utils.sanitize_hostname``
    as ``API._populate_instance_names`` uses it).

    In this order: characters beyond U+00FF dropped; cut to 63; each space,
    underscore and dot becomes ``-`` (so ``a  b`` is ``a--b``); what is
    neither a word character (Unicode ones included: ``café`` stays) nor
    ``.``/``-`` is dropped (``tab\tname`` is ``tabname``); lower case; ``.``
    and ``-`` stripped from both ends. Nothing left: ``Server-<uuid>``.
    """
    host = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    host = re.sub(r"[ _.]", "-", host)
    host = re.sub(r"[^\w.-]+", "", host)
    host = host.lower().strip(".-")
    return host or f"Server-{instance_id}"


def public(instance: dict[str, Any], with_secrets: bool = False) -> dict[str, Any]:
    """The API view: private fields dropped; the password only for the feed."""
    out = {k: v for k, v in instance.items() if not k.startswith("_")}
    if not with_secrets:
        out.pop("password", None)
    return out


def _user_data(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("user_data must be a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid("user_data is not valid base64") from exc
    if len(decoded) > USER_DATA_MAX:
        raise invalid(f"user_data is {len(decoded)} bytes once decoded; the limit is {USER_DATA_MAX}")
    return value


def _meta(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("meta must be an object of strings")
    if len(value) > META_MAX_ITEMS:
        raise invalid(f"meta has {len(value)} items; the limit is {META_MAX_ITEMS}")
    for key, item in value.items():
        if not isinstance(item, str) or not META_KEY.fullmatch(key) or len(item) > 255:
            raise invalid(f"meta item {key[:40]!r}: keys are 1-255 of [a-zA-Z0-9-_:. ], values strings of "
                          f"up to 255 characters")
    return dict(value)


def create_instance(txn: Txn, raw: object, caller: Caller) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) != {"instance"} or not isinstance(raw["instance"], dict):
        raise BadRequest("Body must be {\"instance\": {...}}", "HTTPBadRequest")
    body = raw["instance"]
    unknown = sorted(set(body) - ALLOWED)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    name = as_str(body.get("name"), "name") or ""
    if not name:
        raise invalid("an instance needs a name")
    check_name(name, "name")
    hostname = as_dns_name(body["hostname"], "hostname", 63) if body.get("hostname") is not None else None
    zone = as_str(body.get("availability_zone", "nova"), "availability_zone") or "nova"
    host = _host(body.get("host"), caller)
    instance_id = new_id()
    obj: dict[str, Any] = {
        "id": instance_id,
        "name": name,
        "hostname": hostname or sanitize_hostname(name, instance_id),
        "project_id": project_of(body, caller.project_id, caller.project_id),
        "availability_zone": zone,
        "flavor": as_str(body.get("flavor", "m1.small"), "flavor") or "m1.small",
        "user_data": _user_data(body.get("user_data")),
        "key_name": as_str(body.get("key_name"), "key_name", allow_none=True),
        "public_key": as_str(body.get("public_key"), "public_key", 16384, allow_none=True),
        "meta": _meta(body.get("meta")),
        "launch_index": 0,
        # Nova's OS-EXT-SRV-ATTR:host: where the guest runs; its ports' binding:host_id.
        "host": host,
        "ports": [],
        "password": None,
        "created_at": txn.now,
        "updated_at": txn.now,
        "revision_number": 0,
        "_created_ports": [],
    }
    obj["tenant_id"] = obj["project_id"]
    networks = body.get("networks", [])
    if not isinstance(networks, list):
        raise invalid("networks must be a list")
    owner = COMPUTE_OWNER_PREFIX + zone
    for item in networks:
        obj["ports"].append(_attach(txn, obj, item, owner))
    txn.add("instances", obj)  # one ADDED event, already listing its ports
    return obj


def _host(value: object, caller: Caller) -> str:
    """The host a guest runs on: the admin's or a service's to choose (Nova's requested destination)."""
    if value is None or value == "":
        return ""
    host = as_str(value, "host") or ""
    if any(c.isspace() for c in host) or "/" in host:
        raise invalid(f"host {host[:40]!r} must be a host name")
    if not caller.sees_all:
        raise Forbidden("(rule:compute:servers:create:requested_destination) is disallowed by policy",
                        "PolicyNotAuthorized")
    return host


def _attach(txn: Txn, instance: dict[str, Any], item: object, owner: str) -> str:
    if not isinstance(item, dict) or not item or set(item) - {"uuid", "port", "fixed_ip"}:
        raise invalid(f"network entry {item!r} must be {{uuid}}, {{port}} or {{uuid, fixed_ip}}")
    if "port" in item:
        if set(item) != {"port"}:
            raise invalid("a port entry takes no other keys")
        port = get_or_404(txn, "ports", as_str(item["port"], "port") or "")
        if port["device_id"] or port["device_owner"]:
            raise Conflict(f"Port {port['id']} is still in use.", "PortInUse")
        if port["project_id"] != instance["project_id"]:
            # Nova's PortNotUsable: the metadata service would refuse it anyway
            # (the port's project must be the instance's), so say so now.
            raise Conflict(f"Port {port['id']} not usable for instance {instance['id']}: it belongs to "
                           f"project {port['project_id']}, not {instance['project_id']}.", "PortNotUsable")
        port["device_id"], port["device_owner"] = instance["id"], owner
        if instance["host"]:
            port["binding:host_id"] = instance["host"]
        save(txn, "ports", port)
        return str(port["id"])
    network = get_or_404(txn, "networks", as_str(item.get("uuid"), "uuid") or "")
    port = new_port(new_id(), network, txn.now, random.randbytes, instance["project_id"])
    port["device_id"], port["device_owner"] = instance["id"], owner
    port["binding:host_id"] = instance["host"]
    subnets = txn.select("subnets", network_id=network["id"])
    if "fixed_ip" in item:
        requests = addresses.parse_requests([{"ip_address": item["fixed_ip"]}], subnets, txn, network["id"],
                                            port["mac_address"], owner)
        port["fixed_ips"] = addresses.assign(txn, port["id"], requests)
    else:
        port["fixed_ips"] = addresses.assign_default(txn, port["id"], subnets)
    port["fixed_ips"] = addresses.add_auto_addresses(txn, port, subnets, port["fixed_ips"])
    portsec.apply(txn, port, {}, creating=True)  # the project's default group, as Nova asks Neutron
    create(txn, "ports", port)
    instance["_created_ports"].append(port["id"])
    return str(port["id"])


def delete_instance(txn: Txn, instance_id: str) -> None:
    obj = get_or_404(txn, "instances", instance_id)
    created = set(obj.get("_created_ports", []))
    for port_id in obj["ports"]:
        port = txn.get("ports", port_id)
        if port is None or port["device_id"] != instance_id:
            continue
        if port_id in created:
            txn.remove("ports", port)
        else:
            port["device_id"], port["device_owner"] = "", ""
            if obj.get("host"):
                port["binding:host_id"] = ""
            save(txn, "ports", port)
    txn.remove("instances", obj)


def set_password(txn: Txn, instance_id: str, raw: object) -> dict[str, Any]:
    obj = get_or_404(txn, "instances", instance_id)
    if not isinstance(raw, dict) or set(raw) != {"password"} or not isinstance(raw["password"], str):
        raise BadRequest('Body must be {"password": "<string>"}', "HTTPBadRequest")
    value = raw["password"]
    if len(value.encode("utf-8")) > PASSWORD_MAX:
        raise BadRequest(f"Password is longer than {PASSWORD_MAX} bytes", "InvalidInput")
    if obj.get("password"):
        raise Conflict("Password already set; clear it first", "PasswordAlreadySet")
    obj["password"] = value
    save(txn, "instances", obj)
    return {"password": value}


def clear_password(txn: Txn, instance_id: str) -> None:
    obj = get_or_404(txn, "instances", instance_id)
    if obj.get("password") is not None:
        obj["password"] = None
        save(txn, "instances", obj)


__all__ = ["create_instance", "delete_instance", "set_password", "clear_password", "public", "remove_port"]
