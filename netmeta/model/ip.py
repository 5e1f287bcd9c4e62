"""The one spelling of an IP address that netmeta compares and keys on.

A guest's address reaches netmeta in several spellings: an IPv4 guest that
connects to a dual-stack (IPv6) socket appears as an IPv4-mapped address,
``::ffff:10.0.0.5`` — or ``::FFFF:10.0.0.5``, or in hex, ``::ffff:a00:5`` —
while ports store ``10.0.0.5``. Lookups by address (identity, rate-limit
keys, connection caps, ``local-ipv4``) must all agree, so every one of them
goes through :func:`canonical_ip`, applied once where a connection is
accepted.
"""

from __future__ import annotations

import functools
import ipaddress


# Memoised: every request asks several times (accept, identity, rate limit, views) about
# the same few addresses, and ipaddress parses one in microseconds.
@functools.lru_cache(maxsize=8192)
def canonical_ip(text: str) -> str:
    """``text`` as Python's ``ipaddress`` prints it, IPv4-mapped as plain IPv4.

    The mapped range is ``::ffff:0:0/96`` (RFC 4291 2.5.5.2), whatever the
    case or the notation of the last 32 bits: ``::FFFF:10.0.0.5`` and
    ``::ffff:a00:5`` both give ``10.0.0.5``. Linux drops IPv6 packets whose
    source lies in that range, so a mapped peer always is an IPv4 peer.
    Every other IPv6 address (``::ffff:1:2:3``, ``64:ff9b::a00:5``) stays
    IPv6, in compressed lower case. A string that is no address at all is
    returned unchanged: no port holds it, so lookups simply find nothing.
    """
    try:
        # A link-local peer comes with its scope ("fe80::1%tap0"): the
        # listener already says which link, the address alone is the key.
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=8192)
def ip_version(text: str) -> int | None:
    """4 or 6 for an address in any spelling (mapped forms are 4); None if none."""
    try:
        address = ipaddress.ip_address(canonical_ip(text))
    except ValueError:
        return None
    return address.version


@functools.lru_cache(maxsize=16384)
def network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``ip_network(cidr, strict=False)``, memoised: the agent renders every network's
    DHCP spec on every pass, and parsing the same few subnets each time was a
    third of that (networks are immutable values, so sharing them is safe)."""
    return ipaddress.ip_network(cidr, strict=False)
