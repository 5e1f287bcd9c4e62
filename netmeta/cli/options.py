"""Which settings each command takes, declared once.

A *setting* is a :class:`~netmeta.config.Config` field that a flag can
override. Each one names the *roles* that read it; each command names the
roles it plays. A command's ``--help`` then lists exactly the settings it
uses, and ``netmeta up`` forwards to each child only what that child takes::

    server    the API server (``netmeta server``; ``up`` and ``demo`` run it)
    agent     the host agent (``netmeta agent``)
    metadata  the metadata process (``netmeta metadata``)
    guests    test guests (``netmeta vm ...``)
    explain   ``netmeta explain``
    teardown  ``netmeta down``
    status    ``netmeta status``

To add a setting: add the :class:`~netmeta.config.Config` field (with its
default and a sentence on why), then one :class:`Setting` line in
:data:`SETTINGS` with its flag, a help line and the roles that read it. No
other code changes: parsing, ``--help``, ``up``'s forwarding and the
override of the ``--config`` file all come from this table, and
``tests/unit/test_cli_help.py`` checks that every option has a help line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Iterable

SERVER, AGENT, METADATA = "server", "agent", "metadata"
GUESTS, EXPLAIN, TEARDOWN, STATUS = "guests", "explain", "teardown", "status"
COMPONENTS = (SERVER, AGENT, METADATA)
ROLES = frozenset({*COMPONENTS, GUESTS, EXPLAIN, TEARDOWN, STATUS})
EVERY = ROLES


@dataclass(frozen=True)
class Setting:
    """One overridable setting: its :class:`Config` field, flag, help and readers."""

    dest: str
    flag: str
    help: str
    roles: frozenset[str]
    # "str", "int", "float", "bool" (--x / --no-x), or a tuple of choices
    kind: str | tuple[str, ...] = "str"
    metavar: str | None = None

    def add_to(self, group: Any) -> None:
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help, "default": None}
        if self.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(self.kind, tuple):
            kwargs["choices"] = self.kind
        else:
            kwargs["type"] = _TYPES[self.kind]
            kwargs["metavar"] = self.metavar or self.dest.split("_")[-1].upper()
        group.add_argument(self.flag, **kwargs)

    def argv(self, value: Any) -> list[str]:
        """The flag that passes ``value`` on to a child process."""
        if self.kind == "bool":
            return [self.flag if value else "--no-" + self.flag[2:]]
        return [self.flag, str(value)]


_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


def _roles(*names: str) -> frozenset[str]:
    unknown = set(names) - ROLES
    assert not unknown, f"unknown roles {unknown}"
    return frozenset(names)


SETTINGS: tuple[Setting, ...] = (
    Setting("state_dir", "--state-dir", "state directory: store, dnsmasq files, logs (default /var/lib/netmeta)",
            EVERY, metavar="DIR"),
    Setting("bind", "--bind", "API address host:port; the server listens there, the others call it "
            "(default 127.0.0.1:9696)", _roles(SERVER, AGENT, METADATA, GUESTS, EXPLAIN, STATUS), metavar="HOST:PORT"),
    Setting("auth_strategy", "--auth-strategy",
            "keystone (a token on every API call; the default) or noauth (everyone is admin; loopback only)",
            EVERY, ("keystone", "noauth")),
    Setting("db", "--db", "SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in the state dir)",
            _roles(SERVER), metavar="URL"),
    Setting("change_log_retention", "--change-log-retention",
            "revisions the change feed keeps; a watcher further behind lists again (default 10000)",
            _roles(SERVER), "int", metavar="N"),
    Setting("host", "--host", "the host name this host's agents register under, and where `vm boot` puts a "
            "guest (Neutron's host; default: this machine's hostname)", _roles(AGENT, METADATA, GUESTS, EXPLAIN, STATUS),
            metavar="NAME"),
    Setting("local_ip", "--local-ip", "this host's underlay address for VXLAN (Neutron's [vxlan] local_ip)",
            _roles(AGENT), metavar="IP"),
    Setting("vni_ranges", "--vni-ranges", "VXLAN VNIs for tenant networks, e.g. 1:1000 (empty: networks stay local)",
            _roles(SERVER), metavar="MIN:MAX[,...]"),
    Setting("dhcp_agents_per_network", "--dhcp-agents-per-network",
            "how many DHCP agents serve each network, each with its own DHCP port (default 1)", _roles(SERVER),
            "int", metavar="N"),
    Setting("agent_down_time", "--agent-down-time",
            "seconds without a heartbeat before an agent is dead and its networks move (default 75)",
            _roles(SERVER), "float", metavar="SECONDS"),
    Setting("report_interval", "--report-interval", "seconds between an agent's heartbeats (default 30)",
            _roles(AGENT, METADATA), "float", metavar="SECONDS"),
    Setting("api_urls", "--api-urls", "several API servers on one PostgreSQL, comma-separated URLs: call one, "
            "fail over to the next (default: the one at --bind)", _roles(AGENT, METADATA), metavar="URL[,URL...]"),
    Setting("enable_isolated_metadata", "--enable-isolated-metadata",
            "serve metadata from qdhcp on subnets with no router on their gateway (Neutron's option)",
            _roles(AGENT, METADATA, EXPLAIN), "bool"),
    Setting("force_metadata", "--force-metadata",
            "always route metadata via the DHCP port, routed or not (Neutron's option)",
            _roles(AGENT, METADATA, EXPLAIN), "bool"),
    Setting("dhcp_lease_duration", "--dhcp-lease-duration", "lease time dnsmasq hands out, in seconds; -1 infinite",
            _roles(AGENT), "int", metavar="SECONDS"),
    Setting("metadata_port", "--metadata-port",
            "port of the metadata listener inside each qrouter namespace (default 9697)",
            _roles(AGENT, METADATA, EXPLAIN), "int", metavar="PORT"),
    Setting("min_rtr_adv_interval", "--min-rtr-adv-interval",
            "radvd MinRtrAdvInterval in qrouters, seconds (Neutron's option, default 30)",
            _roles(AGENT), "int", metavar="SECONDS"),
    Setting("max_rtr_adv_interval", "--max-rtr-adv-interval",
            "radvd MaxRtrAdvInterval in qrouters, seconds (Neutron's option, default 100)",
            _roles(AGENT), "int", metavar="SECONDS"),
    Setting("fabric_namespace", "--fabric-namespace",
            "namespace holding the bridges; empty puts them in the root namespace (default netmeta-fabric)",
            _roles(AGENT, GUESTS, EXPLAIN, TEARDOWN), metavar="NAME"),
    Setting("udp_dstport", "--udp-dstport",
            "VXLAN's UDP port between hosts (Neutron [vxlan] udp_dstport; default 0: the kernel's 8472)",
            _roles(AGENT), "int", metavar="PORT"),
    Setting("imds_tokens", "--imds-tokens", "IMDSv2 session tokens: optional (AWS's default), required, or off",
            _roles(METADATA), ("optional", "required", "off")),
    Setting("image_dir", "--image-dir", "cache of built VM images (default <state-dir>/images)",
            _roles(GUESTS), metavar="DIR"),
    Setting("vm_accel", "--vm-accel", "real VMs: auto (KVM if a probe shows it works, else TCG), kvm or tcg",
            _roles(GUESTS), ("auto", "kvm", "tcg")),
    Setting("vm_memory_mb", "--vm-memory", "memory of a real VM in MB (default 512)", _roles(GUESTS), "int",
            metavar="MB"),
    Setting("vm_vcpus", "--vm-vcpus", "virtual CPUs of a real VM (default 1)", _roles(GUESTS), "int", metavar="N"),
    Setting("server_metrics_bind", "--server-metrics-bind",
            "where the server serves /metrics and /healthz; empty: off (default 127.0.0.1:9180)",
            _roles(SERVER, STATUS), metavar="HOST:PORT"),
    Setting("agent_metrics_bind", "--agent-metrics-bind",
            "where the agent serves /metrics and /healthz; empty: off (default 127.0.0.1:9181)",
            _roles(AGENT, STATUS), metavar="HOST:PORT"),
    Setting("metadata_metrics_bind", "--metadata-metrics-bind",
            "where the metadata service serves /metrics and /healthz; empty: off (default 127.0.0.1:9182)",
            _roles(METADATA, STATUS), metavar="HOST:PORT"),
    Setting("log_format", "--log-format", "text (one line for a person) or json (one object a line)",
            _roles(*COMPONENTS), ("text", "json")),
    Setting("log_max_bytes", "--log-max-bytes",
            "rotate <state-dir>/log/<component>.log at this size (default 10 MiB)", _roles(*COMPONENTS), "int",
            metavar="BYTES"),
    Setting("log_console", "--log-console", "also log to stderr (default on; `up` turns it off for its children)",
            _roles(*COMPONENTS), "bool"),
)


def settings_for(roles: Iterable[str]) -> list[Setting]:
    wanted = set(roles)
    return [s for s in SETTINGS if s.roles & wanted]


def add_settings(parser: argparse.ArgumentParser, roles: Iterable[str]) -> None:
    """Give ``parser`` ``--config``, ``-v`` and the settings its roles read."""
    group = parser.add_argument_group("settings (override --config)")
    group.add_argument("--config", metavar="FILE",
                       help="INI file: [DEFAULT] with Neutron's option names (dhcp_agent.ini style)")
    for setting in settings_for(roles):
        setting.add_to(group)
    group.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (``None`` where not given)."""
    return {s.dest: getattr(args, s.dest, None) for s in SETTINGS}


def child_argv(args: argparse.Namespace, role: str) -> list[str]:
    """Flags for a child running as ``role``: only the settings it takes."""
    argv: list[str] = []
    if getattr(args, "config", None):
        argv += ["--config", args.config]
    for setting in settings_for([role]):
        value = getattr(args, setting.dest, None)
        if value is not None:
            argv += setting.argv(value)
    if getattr(args, "verbose", False):
        argv.append("--verbose")
    return argv
