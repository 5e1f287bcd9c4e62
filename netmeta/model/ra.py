"""Router advertisements: the radvd configuration of a qrouter, as a pure function.

Neutron's L3 agent runs one radvd per router (``neutron/agent/linux/ra.py``)
as soon as any interface has an IPv6 subnet, with one ``interface`` stanza
per such ``qr-`` device. What each subnet's ``ipv6_ra_mode`` says the
router advertises:

========================  ===================  ==========================
``ipv6_ra_mode``          flags on the stanza  the subnet's prefix
========================  ===================  ==========================
``slaac``                 —                    ``AdvAutonomous on``
``dhcpv6-stateless``      ``AdvOtherConfigFlag on`` (O)  ``AdvAutonomous on``
``dhcpv6-stateful``       ``AdvManagedFlag on`` (M)      ``AdvAutonomous off``
none (another router)     —                    not advertised
========================  ===================  ==========================

Every prefix is ``AdvOnLink on``. The DNS servers of the ``slaac`` subnets
go out as ``RDNSS`` (at most three: the guest has no DHCPv6 to ask), the
network's MTU as ``AdvLinkMTU`` when it is at least IPv6's 1280, and every
stanza ends with a route to ``fe80::a9fe:a9fe/128`` — the metadata address,
reached through the router (``Route Information``, RFC 4191).

Interfaces come in the given order (by port id); subnets in each by id, as
the snapshot orders them. The text is the same for the same input, so the
agent reloads radvd (SIGHUP) only when it really changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from netmeta.model import ipam
from netmeta.model.types import METADATA_V6_CIDR, Subnet

# neutron-lib IPV6_MIN_MTU: a smaller link MTU is not advertised.
IPV6_MIN_MTU = 1280
# neutron/agent/linux/ra.py MAX_RDNSS_ENTRIES.
MAX_RDNSS_ENTRIES = 3


@dataclass(frozen=True)
class RaInterface:
    """One ``qr-`` device with the IPv6 subnets its port is on."""

    device: str
    mtu: int
    subnets: tuple[Subnet, ...]


def _stanza(iface: RaInterface, min_interval: int, max_interval: int) -> list[str]:
    modes = {s.ipv6_ra_mode for s in iface.subnets}
    lines = [
        f"interface {iface.device}",
        "{",
        "   AdvSendAdvert on;",
        f"   MinRtrAdvInterval {min_interval};",
        f"   MaxRtrAdvInterval {max_interval};",
    ]
    if iface.mtu >= IPV6_MIN_MTU:
        lines.append(f"   AdvLinkMTU {iface.mtu};")
    if ipam.DHCPV6_STATELESS in modes:
        lines.append("   AdvOtherConfigFlag on;")
    if ipam.DHCPV6_STATEFUL in modes:
        lines.append("   AdvManagedFlag on;")
    dns = [ip for s in iface.subnets if s.ipv6_ra_mode == ipam.IPV6_SLAAC for ip in s.dns_nameservers]
    if dns:
        lines.append(f"   RDNSS {' '.join(dns[:MAX_RDNSS_ENTRIES])} {{}};")
    auto = [s.cidr for s in iface.subnets if s.ipv6_ra_mode in ipam.AUTO_ADDRESS_MODES]
    stateful = [s.cidr for s in iface.subnets if s.ipv6_ra_mode == ipam.DHCPV6_STATEFUL]
    for cidr, autonomous in [(c, "on") for c in auto] + [(c, "off") for c in stateful]:
        lines += [f"   prefix {cidr}", "   {", "        AdvOnLink on;", f"        AdvAutonomous {autonomous};",
                  "   };"]
    lines += [f"   route {METADATA_V6_CIDR} {{", "   };", "};"]
    return lines


def radvd_config(interfaces: Sequence[RaInterface], min_interval: int, max_interval: int) -> str:
    """radvd.conf for a router: one stanza per interface with an IPv6 subnet; "" when none has one."""
    lines: list[str] = []
    for iface in interfaces:
        if iface.subnets:
            lines += _stanza(iface, min_interval, max_interval)
    return "".join(line + "\n" for line in lines)


def radvd_argv(conf: str, pid_file: str, log_file: str) -> list[str]:
    """radvd's command line: Neutron's ``-C``/``-p``, logging to a file (a namespace has no syslog)."""
    return ["radvd", "-C", conf, "-p", pid_file, "-m", "logfile", "-l", log_file]
