"""A port's DNS names and extra DHCP options, as Neutron's extensions keep them.

**DNS** (the ML2 ``dns`` extension driver, no external DNS service): every
port shows ``dns_assignment``, one ``{ip_address, hostname, fqdn}`` per fixed
IP, recomputed whenever the port is stored. The domain is the server's
``dns_domain`` setting (Neutron's ``[DEFAULT] dns_domain``) with a trailing
dot added. A port's ``dns_name`` names its addresses only when that domain is
set and is not Neutron's default ``openstacklocal``; otherwise every address
is ``host-<ip with dashes>``. A ``dns_name`` ending with a dot is already an
FQDN (and must then end with the domain). A network's ``dns_domain`` is
stored and shown but, as in Neutron without an external DNS driver, does not
change the names.

**Extra DHCP options** (``extra_dhcp_opt``): a list of
``{opt_name, opt_value, ip_version}``; names may be dnsmasq option names or
numbers. On create, options with an empty value are dropped; on update the
given list is *merged* into the stored one by ``(opt_name, ip_version)``: a
new value replaces, ``opt_value: null`` deletes, and unnamed options stay —
Neutron's ``_update_extra_dhcp_opts_on_port``. The agent writes them as
``tag:port-<id>`` lines (:mod:`netmeta.model.dhcp`).
"""

from __future__ import annotations

import re
from typing import Any

from netmeta.model.dhcp import host_name
from netmeta.server.errors import BadRequest

DNS_DOMAIN_DEFAULT = "openstacklocal."
FQDN_MAX = 255  # neutron-lib FQDN_FIELD_SIZE
# neutron-lib DNS_LABEL_REGEX: lower case only (a label of 63 characters is the limit).
_LABEL = re.compile(r"^[a-z0-9-]{1,63}$", re.ASCII)
# Options whose value may be blank (neutron-lib VALID_BLANK_EXTRA_DHCP_OPTS).
BLANK_OK = ("router", "classless-static-route")
OPT_NAME_MAX, OPT_VALUE_MAX = 64, 255


def _domain(setting: str) -> str:
    if not setting:
        return ""
    return setting if setting.endswith(".") else setting + "."


def _invalid(attribute: str, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for {attribute}. Reason: {reason}.", "InvalidInput")


# --- DNS ------------------------------------------------------------------------


def _format_error(name: str) -> str | None:
    """neutron-lib ``_validate_dns_format``: a PQDN or FQDN of valid labels."""
    trimmed = name[:-1] if name.endswith(".") else name
    if len(trimmed) > FQDN_MAX:
        return f"'{trimmed}' exceeds the {FQDN_MAX} character FQDN limit"
    labels = trimmed.split(".")
    for label in labels:
        if not label:
            return "Encountered an empty component"
        if label.startswith("-") or label.endswith("-"):
            return f"Name '{label}' must not start or end with a hyphen"
        if not _LABEL.match(label):
            return f"Name '{label}' must be 1-63 characters long, each of which can only be alphanumeric or a hyphen"
    if len(labels) > 1 and labels[-1].isdigit() and labels[-1].isascii():
        return f"TLD '{labels[-1]}' must not be all numeric"
    return None


def validate_dns_name(value: object, setting: str) -> str:
    """A port's ``dns_name`` as Neutron's ``validate_dns_name`` accepts it; 400 otherwise."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid("dns_name", f"'{value}' is not a valid string")
    if len(value) > FQDN_MAX:
        raise _invalid("dns_name", f"'{value}' exceeds maximum length of {FQDN_MAX}")
    if not value:
        return ""
    reason = _format_error(value)
    if reason:
        raise _invalid("dns_name", f"'{value}' not a valid PQDN or FQDN. Reason: {reason}")
    domain = _domain(setting)
    if domain and domain != DNS_DOMAIN_DEFAULT:
        higher = f".{domain}"
        if not value.endswith("."):
            if len(value) + len(higher) > FQDN_MAX:
                raise _invalid("dns_name", f"The dns_name passed is a PQDN and its size is '{len(value)}', too long "
                               f"with the dns_domain {setting}")
        elif len(value) <= len(higher) or not value.endswith(higher):
            raise _invalid(
                "dns_name",
                f"The dns_name passed is a FQDN. Its higher level labels must be equal to the dns_domain "
                f"option in neutron.conf, that has been set to '{setting}'. It must also include one or more "
                f"valid DNS labels to the left of '{setting}'",
            )
    return value


def dns_assignment(port: dict[str, Any], setting: str) -> list[dict[str, str]]:
    """Neutron's ``_get_dns_names_for_port`` for a stored port."""
    domain = _domain(setting)
    name = port.get("dns_name") or "" if domain and domain != DNS_DOMAIN_DEFAULT else ""
    out: list[dict[str, str]] = []
    for fixed in port.get("fixed_ips") or ():
        ip = fixed["ip_address"]
        if name:
            hostname = name
            fqdn = name if name.endswith(".") else f"{name}.{domain}"
        else:
            hostname = host_name(ip)
            fqdn = f"{hostname}.{domain}" if domain else hostname
        out.append({"ip_address": ip, "hostname": hostname, "fqdn": fqdn})
    return out


# --- extra DHCP options ------------------------------------------------------------


def _opt_error(item: object) -> str | None:
    """Why one option dict matches neither of neutron-lib's key specs (None: it matches)."""
    if not isinstance(item, dict):
        return f"'{item}' is not a dictionary"
    missing = [k for k in ("opt_name", "opt_value") if k not in item]
    if missing:
        return f"Validation of dictionary's keys failed. Expected keys: {{'opt_name', 'opt_value'}} Provided keys: {set(item)}"
    unexpected = sorted(k for k in item if k not in ("opt_name", "opt_value", "ip_version"))
    if unexpected:
        return f"Unexpected keys supplied: {', '.join(unexpected)}"
    if "ip_version" in item:
        version = item["ip_version"]
        try:
            number = int(version) if not isinstance(version, bool) else None
        except (TypeError, ValueError):
            number = None
        if number not in (4, 6) or isinstance(version, float) and version != number:
            return f"'{version}' is not in [4, 6]"
    name, value = item["opt_name"], item["opt_value"]
    if name in BLANK_OK:
        if value is not None and not isinstance(value, str):
            return f"'{value}' is not a valid string"
        if isinstance(value, str) and len(value) > OPT_VALUE_MAX:
            return f"'{value}' exceeds maximum length of {OPT_VALUE_MAX}"
        return None
    for what, text, limit, none_ok in (("opt_name", name, OPT_NAME_MAX, False), ("opt_value", value, OPT_VALUE_MAX, True)):
        if text is None and none_ok:
            continue
        if not isinstance(text, str):
            return f"'{text}' is not a valid string"
        if len(text) > limit:
            return f"'{text}' exceeds maximum length of {limit}"
        if not text.strip():
            return f"'{text}' Blank strings are not permitted"
        if len(text.splitlines()) > 1:
            return f"Multi-line string is not allowed: '{text}'"
    return None


def parse_extra_dhcp_opts(raw: object) -> list[dict[str, Any]] | None:
    """Validated options (``ip_version`` filled in as an int), or None for "no change"."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _invalid("extra_dhcp_opts", f"'{raw}' is not a list")
    seen: list[object] = []
    for item in raw:
        if item in seen:
            raise _invalid("extra_dhcp_opts", f"Duplicate items in the list: '{item}'")
        seen.append(item)
    out: list[dict[str, Any]] = []
    for item in raw:
        reason = _opt_error(item)
        if reason:
            raise _invalid("extra_dhcp_opts", reason)
        assert isinstance(item, dict)
        out.append({"opt_name": item["opt_name"], "opt_value": item["opt_value"],
                    "ip_version": int(item.get("ip_version", 4))})
    return out


def _keep(opt: dict[str, Any]) -> bool:
    """Neutron's ``_is_valid_opt_value``: blank-able options need a value, others a non-empty one."""
    if opt["opt_name"] in BLANK_OK:
        return opt["opt_value"] is not None
    return bool(opt["opt_value"])


def created_opts(given: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [o for o in given or () if _keep(o)]


def merged_opts(old: list[dict[str, Any]], given: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The stored options after an update that names ``given`` (see the module docstring)."""
    if not given:
        return list(old)
    current = [dict(o) for o in old]
    for update in given:
        key = (update["opt_name"], update["ip_version"])
        match = next((o for o in current if (o["opt_name"], o.get("ip_version", 4)) == key), None)
        if match is None:
            if _keep(update):
                current.append(dict(update))
        elif update["opt_value"] is None:
            current.remove(match)
        elif _keep(update):
            match["opt_value"] = update["opt_value"]
    return current
