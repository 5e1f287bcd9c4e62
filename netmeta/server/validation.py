"""Request-body checks: which attributes a resource accepts, and their types.

Neutron refuses attributes it does not know ("Unrecognized attribute(s)")
and read-only ones on update ("Cannot update read-only attribute"); wrong
types are 400 ``InvalidInput``. These functions do exactly that and nothing
else, so the resource logic can assume clean values. They are pure and
table-tested in ``tests/unit/test_validation.py``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from netmeta.server.bodies import check_name
from netmeta.server.errors import BadRequest, invalid

# Attributes the API knows per resource, split by who may set them. Anything
# outside both sets is unrecognised; "readonly" ones are refused on update.
COMMON_WRITABLE = {"name", "description", "admin_state_up", "tags"}
COMMON_CREATE_ONLY = {"project_id", "tenant_id"}
READONLY = {"id", "status", "created_at", "updated_at", "revision_number"}

WRITABLE: dict[str, set[str]] = {
    "networks": COMMON_WRITABLE
    | {
        "shared",
        "mtu",
        "router:external",
        "port_security_enabled",
        "availability_zone_hints",
        "dns_domain",
        "qos_policy_id",
        "is_default",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    },
    "subnets": COMMON_WRITABLE
    | {"gateway_ip", "enable_dhcp", "dns_nameservers", "host_routes", "allocation_pools", "service_types",
       "dns_publish_fixed_ip", "segment_id"},
    "ports": COMMON_WRITABLE
    | {
        "fixed_ips",
        "device_id",
        "device_owner",
        "mac_address",
        "security_groups",
        "allowed_address_pairs",
        "extra_dhcp_opts",
        "port_security_enabled",
        "binding:host_id",
        "binding:vnic_type",
        "binding:profile",
        "dns_name",
        "qos_policy_id",
        "data_plane_status",
        "numa_affinity_policy",
        "propagate_uplink_status",
    },
    "routers": COMMON_WRITABLE | {"external_gateway_info", "routes", "distributed", "ha", "availability_zone_hints",
                                  "flavor_id", "enable_ndp_proxy"},
}
CREATE_ONLY: dict[str, set[str]] = {
    "networks": COMMON_CREATE_ONLY,
    "subnets": COMMON_CREATE_ONLY | {"network_id", "cidr", "ip_version", "subnetpool_id", "prefixlen",
                                     "ipv6_ra_mode", "ipv6_address_mode", "use_default_subnetpool"},
    "ports": COMMON_CREATE_ONLY | {"network_id"},
    "routers": COMMON_CREATE_ONLY,
}
SINGULAR = {"networks": "network", "subnets": "subnet", "ports": "port", "routers": "router",
            "security_groups": "security_group", "security_group_rules": "security_group_rule"}


def resource_body(raw: object, kind: str, creating: bool) -> dict[str, Any]:
    """Unwrap ``{"network": {...}}`` and refuse unknown or read-only keys."""
    key = SINGULAR[kind]
    if not isinstance(raw, dict) or key not in raw:
        raise BadRequest(f"Resource body required, expected an object with key '{key}'.", "HTTPBadRequest")
    if len(raw) != 1:
        raise BadRequest("Extra top-level keys are not supported.", "HTTPBadRequest")
    body = raw[key]
    if not isinstance(body, dict):
        raise BadRequest(f"Resource body '{key}' must be an object.", "HTTPBadRequest")
    allowed = WRITABLE[kind] | (CREATE_ONLY[kind] if creating else set())
    readonly = sorted(k for k in body if k in READONLY or (not creating and k in CREATE_ONLY[kind]))
    if readonly:
        raise BadRequest(f"Cannot update read-only attribute {readonly[0]}", "HTTPBadRequest")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    return dict(body)


def bulk_bodies(raw: object, kind: str) -> list[dict[str, Any]] | None:
    """Neutron's bulk create, ``{"networks": [{...}, ...]}``: each item checked; None for one resource.

    As in Neutron, an item may be the bare attributes or wrapped
    (``{"network": {...}}``), and an empty list is 400 "Resources required".
    Every item is checked here, before any is created; the creation itself
    is one transaction, so a bad item anywhere changes nothing.
    """
    if not isinstance(raw, dict) or kind not in raw:
        return None
    if len(raw) != 1:
        raise BadRequest("Extra top-level keys are not supported.", "HTTPBadRequest")
    items = raw[kind]
    if not isinstance(items, list):
        raise BadRequest(f"Resource body '{kind}' must be a list.", "HTTPBadRequest")
    if not items:
        raise BadRequest("Resources required", "HTTPBadRequest")
    key = SINGULAR[kind]
    bodies = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest(f"Each of '{kind}' must be an object.", "HTTPBadRequest")
        bodies.append(resource_body(item if key in item else {key: item}, kind, creating=True))
    return bodies


def as_bool(value: object, name: str) -> bool:
    """Neutron's ``convert_to_boolean``: booleans, 0/1 and "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise invalid(f"'{value}' cannot be converted to boolean for {name}")


def as_str(value: object, name: str, max_len: int = 255, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{value}' is not a valid string for {name}")
    if len(value) > max_len:
        raise invalid(f"'{value[:40]}...' exceeds maximum length of {max_len} for {name}")
    return value


def as_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid(f"'{value}' is not an integer for {name}")
    try:
        number = int(value)
    except ValueError as exc:
        raise invalid(f"'{value}' is not an integer for {name}") from exc
    if not low <= number <= high:
        raise invalid(f"'{number}' is out of range {low}..{high} for {name}")
    return number


def as_str_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"'{value}' is not a list of strings for {name}")
    return list(value)


_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?", re.IGNORECASE)


def as_dns_name(value: object, name: str, max_len: int = 255) -> str:
    """A host name or FQDN (Neutron's ``dns_name``, Nova's ``hostname``); "" allowed.

    Labels of letters, digits and hyphens (1-63, no hyphen at either end),
    separated by dots: ``../../etc`` or ``a/b`` can never reach a file name or
    a dnsmasq line.
    """
    text = as_str(value, name, max_len) or ""
    if text and not _DNS_NAME.fullmatch(text):
        raise invalid(f"'{text[:64]}' not a valid DNS name for {name}: letters, digits, '-' and '.' only; "
                      f"labels of 1 to 63 characters that neither start nor end with '-'")
    return text


def project_of(body: Mapping[str, Any], header: str | None, default: str) -> str:
    """Body ``project_id``/``tenant_id``, else the header, else the default."""
    project = body.get("project_id")
    tenant = body.get("tenant_id")
    if project is not None and tenant is not None and project != tenant:
        raise invalid("project_id and tenant_id do not match")
    chosen = project if project is not None else tenant
    if chosen is None:
        chosen = header or default
    result = as_str(chosen, "project_id")
    assert result is not None
    return result


def common_attrs(obj: dict[str, Any], body: Mapping[str, Any]) -> None:
    """Apply name, description, admin_state_up and tags from a body."""
    if "name" in body:
        obj["name"] = as_str(body["name"], "name")
        check_name(obj["name"], "name")
    if "description" in body:
        obj["description"] = as_str(body["description"], "description")
    if "admin_state_up" in body:
        obj["admin_state_up"] = as_bool(body["admin_state_up"], "admin_state_up")
    if "tags" in body:
        obj["tags"] = as_str_list(body["tags"], "tags")
