"""Neutron's list query language: filters, ``fields``, sorting, pagination.

* ``?name=a&name=b`` — a repeated parameter means OR; different parameters
  AND together.
* A parameter that is not an attribute of the resource is 400, as Neutron
  answers with ``filter_validation`` on (its default): silently ignoring a
  typo would return everything, which is worse than an error.
* Booleans accept ``true/false/1/0``; list attributes (``subnets``, ``tags``,
  ``dns_nameservers``…) match when they contain the value;
  ``fixed_ips=ip_address=…`` / ``fixed_ips=subnet_id=…`` match a port with
  such an address; ``tags``, ``tags-any``, ``not-tags``, ``not-tags-any``
  take comma-separated tags as Neutron's tag extension does.
* ``fields=`` (repeated or comma-separated) keeps only those attributes.
* ``sort_key``/``sort_dir``, ``limit``/``marker`` page through results, with
  a ``<kind>_links`` "next" link as Neutron gives.

Everything here is pure: it takes documents and a query and returns
documents.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from netmeta.server.errors import BadRequest, NotFound

CONTROL = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
TAG_FILTERS = {"tags", "tags-any", "not-tags", "not-tags-any"}
STANDARD = {"id", "name", "tenant_id", "project_id", "description", "created_at", "updated_at",
            "revision_number", "admin_state_up", "status"}
ATTRIBUTES: dict[str, set[str]] = {
    "networks": STANDARD | {"subnets", "shared", "mtu", "router:external", "port_security_enabled",
                            "availability_zone_hints", "availability_zones", "ipv4_address_scope",
                            "ipv6_address_scope", "l2_adjacency", "is_default", "qos_policy_id", "dns_domain",
                            "provider:network_type", "provider:physical_network", "provider:segmentation_id"},
    "subnets": STANDARD | {"network_id", "ip_version", "cidr", "gateway_ip", "allocation_pools", "enable_dhcp",
                           "dns_nameservers", "host_routes", "subnetpool_id", "ipv6_ra_mode",
                           "ipv6_address_mode", "service_types", "segment_id", "dns_publish_fixed_ip"},
    "ports": STANDARD | {"network_id", "mac_address", "fixed_ips", "device_id", "device_owner",
                         "allowed_address_pairs", "extra_dhcp_opts", "security_groups", "port_security_enabled",
                         "binding:host_id", "binding:vnic_type", "binding:vif_type", "binding:vif_details",
                         "binding:profile", "dns_name", "dns_assignment", "qos_policy_id",
                         "propagate_uplink_status", "ip_allocation"},
    "routers": STANDARD | {"external_gateway_info", "routes", "distributed", "ha", "flavor_id",
                           "availability_zone_hints", "availability_zones", "enable_ndp_proxy"},
    "security_groups": {"id", "name", "tenant_id", "project_id", "description", "created_at", "updated_at",
                        "revision_number", "security_group_rules", "stateful", "shared"},
    "security_group_rules": {"id", "tenant_id", "project_id", "description", "created_at", "updated_at",
                             "revision_number", "security_group_id", "direction", "ethertype", "protocol",
                             "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id",
                             "remote_address_group_id", "normalized_cidr", "belongs_to_default_sg"},
    "agents": {"id", "agent_type", "binary", "topic", "host", "admin_state_up", "created_at", "started_at",
               "heartbeat_timestamp", "alive", "configurations", "availability_zone", "description",
               "resources_synced"},
    "instances": {"id", "name", "hostname", "project_id", "tenant_id", "availability_zone", "flavor",
                  "key_name", "launch_index", "created_at", "updated_at", "revision_number", "ports", "host"},
}
BOOLEAN = {"admin_state_up", "shared", "router:external", "port_security_enabled", "enable_dhcp", "distributed",
           "ha", "is_default", "l2_adjacency", "stateful", "belongs_to_default_sg", "dns_publish_fixed_ip", "enable_ndp_proxy", "propagate_uplink_status",
           "alive"}
MultiQuery = Sequence[tuple[str, str]]


def _truth(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"Invalid input for {name}. Reason: '{value}' is not a valid boolean.", "InvalidInput")


def parse(kind: str, query: MultiQuery) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a query into (filters, controls); unknown attributes are 400."""
    filters: dict[str, list[str]] = {}
    controls: dict[str, list[str]] = {}
    for key, value in query:
        if key in CONTROL:
            controls.setdefault(key, []).append(value)
        elif key in ATTRIBUTES[kind] or (key in TAG_FILTERS and kind not in ("instances", "security_group_rules")):
            if key in BOOLEAN:
                _truth(value, key)
            filters.setdefault(key, []).append(value)
        else:
            raise BadRequest(f"[{key}] is invalid attribute for filtering", "HTTPBadRequest")
    return filters, controls


def _matches_one(obj: Mapping[str, Any], key: str, values: list[str]) -> bool:
    if key in TAG_FILTERS:
        tags = set(obj.get("tags") or ())
        wanted = {t for v in values for t in v.split(",") if t}
        if key == "tags":
            return wanted <= tags
        if key == "tags-any":
            return bool(wanted & tags)
        if key == "not-tags":
            return not wanted <= tags
        return not wanted & tags
    actual = obj.get(key)
    if key == "fixed_ips":
        return _fixed_ips_match(actual or [], values)
    if key in BOOLEAN:
        return any(_truth(v, key) == bool(actual) for v in values)
    if isinstance(actual, list):
        return any(v in [str(a) for a in actual] for v in values)
    if actual is None:
        return any(v in ("", "None", "null") for v in values)
    return str(actual) in values


def _fixed_ips_match(fixed_ips: list[dict[str, str]], values: list[str]) -> bool:
    wanted: dict[str, set[str]] = {}
    for value in values:
        name, _, wanted_value = value.partition("=")
        if name not in ("ip_address", "subnet_id", "ip_address_substr"):
            raise BadRequest(f"Invalid fixed_ips filter {value!r}", "HTTPBadRequest")
        wanted.setdefault(name, set()).add(wanted_value)
    for name, options in wanted.items():
        if name == "ip_address_substr":
            ok = any(opt in f["ip_address"] for f in fixed_ips for opt in options)
        else:
            ok = any(f[name] in options for f in fixed_ips)
        if not ok:
            return False
    return True


def apply(objs: Iterable[Mapping[str, Any]], filters: Mapping[str, list[str]]) -> list[Mapping[str, Any]]:
    if not filters:
        return list(objs)
    return [o for o in objs if all(_matches_one(o, k, v) for k, v in filters.items())]


def field_list(controls: Mapping[str, list[str]]) -> list[str]:
    return [f for raw in controls.get("fields", []) for f in raw.split(",") if f]


def select_fields(obj: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    if not fields:
        return dict(obj)
    return {f: obj[f] for f in fields if f in obj}


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def sort_and_page(
    kind: str, objs: list[Mapping[str, Any]], controls: Mapping[str, list[str]], base_url: str
) -> tuple[list[Mapping[str, Any]], list[dict[str, str]]]:
    """Apply sort_key/sort_dir, marker and limit; returns items and links."""
    keys = controls.get("sort_key", [])
    dirs = controls.get("sort_dir", [])
    for key in keys:
        if key not in ATTRIBUTES[kind]:
            raise BadRequest(f"{key} is an invalid attribute for sort_keys", "HTTPBadRequest")
    for index in reversed(range(len(keys))):
        direction = dirs[index] if index < len(dirs) else "asc"
        if direction not in ("asc", "desc"):
            raise BadRequest(f"{direction} is an invalid value for sort_dirs", "HTTPBadRequest")
        key = keys[index]
        objs = sorted(objs, key=lambda o: _sort_value(o.get(key)), reverse=direction == "desc")
    marker = controls.get("marker", [None])[-1]
    if marker:
        ids = [o["id"] for o in objs]
        if marker not in ids:
            raise NotFound(f"Marker {marker} could not be found.", "HTTPNotFound")
        objs = objs[ids.index(marker) + 1:]
    links: list[dict[str, str]] = []
    raw_limit = controls.get("limit", [None])[-1]
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)
        except ValueError as exc:
            raise BadRequest(f"Limit must be an integer 0 or greater and not '{raw_limit}'", "HTTPBadRequest") from exc
        if limit < 0:
            raise BadRequest(f"Limit must be an integer 0 or greater and not '{raw_limit}'", "HTTPBadRequest")
        if 0 < limit < len(objs):
            objs = objs[:limit]
            links.append({"rel": "next", "href": f"{base_url}?limit={limit}&marker={objs[-1]['id']}"})
    return objs, links
