"""Settings for every netmeta component, as small typed frozen dataclasses.

Option names are Neutron's (``dhcp_agent.ini``, ``l3_agent.ini``,
``metadata_agent.ini``) wherever the meaning is the same, so an operator's
existing knowledge and files carry over. Every command accepts
``--config FILE``: an INI file with a ``[DEFAULT]`` section (and optionally
``[metadata_rate_limiting]`` and ``[keystone_authtoken]``), read once by :func:`load`; command-line flags
override what the file says.

This module does no I/O besides reading the given file in :func:`load`.
"""

from __future__ import annotations

import configparser
import ipaddress
import dataclasses
import hashlib
import os
import socket
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from netmeta.model.paths import StatePaths

DEFAULT_STATE_DIR = "/var/lib/netmeta"
DEFAULT_API_BIND = "127.0.0.1:9696"
# Runtime files dnsmasq must read as its unprivileged user (Config.dhcp_dir).
DHCP_RUNTIME_ROOT = "/run/netmeta"


class ConfigError(ValueError):
    """A setting has a value netmeta cannot use; the message names it."""


@dataclass(frozen=True)
class RateLimitConfig:
    """Neutron's ``[metadata_rate_limiting]`` group, with defaults no boot ever meets.

    Neutron ships it off (and 10 requests per 10 s when on, which a single
    cloud-init crawl already exceeds). Here it is on by default, sized from
    what a boot really asks: cloud-init's OpenStack reader (~15 requests)
    plus its EC2 crawl of one version (55 requests with the ``macs`` tree),
    done twice per boot; on a fast host that is ~140 requests well inside
    one second. Both windows stay far above it, while a flood (thousands per
    second) is refused within its first second.
    """

    rate_limit_enabled: bool = True
    # Which guest address families are limited ("4", "6" or both).
    ip_versions: tuple[int, ...] = (4, 6)
    # The sustained window and how many requests it allows (100/s on average).
    base_window_duration: int = 10
    base_query_rate_limit: int = 1000
    # A shorter window that tolerates a boot-time burst (two whole boots at once).
    burst_window_duration: int = 1
    burst_query_rate_limit: int = 400


@dataclass(frozen=True)
class KeystoneAuthtoken:
    """Neutron's ``[keystone_authtoken]`` group: an external Keystone.

    With ``auth_url`` empty (the default) netmeta's own embedded identity
    service issues and checks tokens. With it set, tokens are validated
    against that Keystone (as keystonemiddleware does, with a cache), and
    the agent, metadata process and ``netmeta vm`` log in there with the
    ``username``/``password`` service account given here.
    """

    # Where clients are told to authenticate (WWW-Authenticate); defaults to auth_url.
    www_authenticate_uri: str = ""
    # The Keystone netmeta talks to (…/v3 or the unversioned root).
    auth_url: str = ""
    auth_type: str = "password"
    username: str = ""
    password: str = ""
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = ""
    # Seconds a validated token is trusted without asking Keystone again.
    token_cache_time: int = 300


@dataclass(frozen=True)
class Config:
    """One flat set of settings shared by server, agent, metadata and guests."""

    # Where the SQLite file, dnsmasq files, pid files and guest leases live.
    state_dir: str = DEFAULT_STATE_DIR
    # The API address the server binds and every other component talks to.
    bind: str = DEFAULT_API_BIND
    # SQLAlchemy URL; empty means the embedded SQLite file in state_dir.
    db: str = ""
    # Project given to resources created without one under noauth.
    default_project_id: str = "netmeta"
    # Neutron's option: "keystone" needs a token on every API request (the
    # embedded identity service, or [keystone_authtoken]); "noauth" trusts
    # every caller as admin and is refused unless the API binds loopback.
    auth_strategy: str = "keystone"
    # How many revisions the change feed keeps; a watcher further behind is
    # told to list again (HTTP 410), as a Kubernetes watch is.
    change_log_retention: int = 10000
    # oslo.middleware's sizelimit default: a larger body is refused (413)
    # while it is read, never buffered whole.
    max_request_body_size: int = 114688
    # Neutron's limit on addresses per port (each one is a dnsmasq host line).
    max_fixed_ips_per_port: int = 5

    # --- several hosts (Neutron's [DEFAULT] host, [agent], ml2, [vxlan]) ---
    # The name this host's agents register under; empty: the machine's hostname.
    host: str = ""
    # This host's underlay address for VXLAN (linuxbridge [vxlan] local_ip);
    # reported to the server as the Linux bridge agent's tunneling_ip.
    local_ip: str = ""
    # ml2_type_vxlan vni_ranges, "1:1000[,2000:2100]": tenant networks become
    # vxlan with a VNI from these; empty keeps them "local" (one host).
    vni_ranges: str = ""
    # The underlay MTU; a vxlan network gets 50 bytes less (Neutron's overhead).
    global_physnet_mtu: int = 1500
    # How many DHCP agents serve each network, each with its own DHCP port.
    dhcp_agents_per_network: int = 1
    # Seconds without a heartbeat after which an agent is shown dead and its
    # networks move to another DHCP agent (Neutron: 75, twice report_interval and more).
    agent_down_time: float = 75.0
    # Neutron's: move a network off a dead (or disabled) DHCP agent to another one.
    allow_automatic_dhcp_failover: bool = True
    # Neutron's: move a router off a dead (or disabled) L3 agent; off by default
    # there too (a move interrupts the router's traffic; an admin decides).
    allow_automatic_l3agent_failover: bool = False
    # Seconds between an agent's heartbeats (Neutron [agent] report_interval).
    report_interval: float = 30.0
    # Several API servers sharing one PostgreSQL, comma-separated URLs: the
    # agent and the metadata process call one and fail over to the next.
    # Empty: the one at `bind`.
    api_urls: str = ""

    # --- DHCP agent (Neutron dhcp_agent.ini) ---
    # Serve metadata from qdhcp when a subnet has no router on its gateway.
    enable_isolated_metadata: bool = False
    # Always route metadata via the DHCP port, routed or not (a superset).
    force_metadata: bool = False
    # Lease time handed to guests, in seconds.
    dhcp_lease_duration: int = 86400
    # Domain dnsmasq gives to guest host names.
    dns_domain: str = "openstacklocal"

    # --- L3 agent (Neutron l3_agent.ini) ---
    # Redirect 169.254.169.254:80 in routers to a local listener.
    enable_metadata_proxy: bool = True
    # Where that listener sits inside each qrouter namespace.
    metadata_port: int = 9697
    # The fwmark that tags metadata traffic inside a router.
    metadata_access_mark: str = "0x1"
    # radvd's MinRtrAdvInterval/MaxRtrAdvInterval in each qrouter (Neutron's
    # defaults 30/100 s; radvd also answers router solicitations at once, so
    # only a guest that never solicits waits that long).
    min_rtr_adv_interval: int = 30
    max_rtr_adv_interval: int = 100

    # --- where bridges live ---
    # Namespace holding the brq bridges; empty puts them in the root namespace
    # (only for plugging real VM taps: tests and demos never do that).
    fabric_namespace: str = "netmeta-fabric"
    # Neutron linuxbridge [vxlan] udp_dstport: VXLAN's UDP port on the
    # underlay; 0 keeps the kernel's default (8472), as Neutron's unset does
    # (set 4789, IANA's, when other VTEPs use it).
    udp_dstport: int = 0

    # --- real VMs (``netmeta image``, ``netmeta vm boot --image``) ---
    # Where built cloud images are cached; empty: <state_dir>/images. A
    # separate directory survives ``down --purge`` (a build takes minutes).
    image_dir: str = ""
    # "auto" uses KVM only when a short probe shows a guest really runs under
    # it (nested KVM often opens but faults), else software emulation (TCG);
    # "kvm" or "tcg" forces one.
    vm_accel: str = "auto"
    # A VM's size: cloud-init under TCG needs 512 MB; two fit on 2 cores.
    vm_memory_mb: int = 512
    vm_vcpus: int = 1

    # --- metadata (Neutron metadata_agent.ini and Nova [api]) ---
    # "local" serves from netmeta's own data; "nova" forwards to a real Nova.
    metadata_backend: str = "local"
    nova_metadata_host: str = "127.0.0.1"
    nova_metadata_port: int = 8775
    nova_metadata_protocol: str = "http"
    # Key for X-Instance-ID-Signature, both directions.
    metadata_proxy_shared_secret: str = ""
    # Nova's [DEFAULT] metadata_listen / metadata_listen_port: where netmeta
    # answers like Nova's metadata API for requests signed by a Neutron
    # metadata agent (X-Instance-ID-Signature). Empty: no such listener.
    metadata_listen: str = ""
    metadata_listen_port: int = 8775
    # Neutron's metadata_workers: processes serving every listener; 0 means
    # one per CPU, 1 a single process.
    metadata_workers: int = 0
    # Connection caps per guest port, per listener and per process, sized from
    # RLIMIT_NOFILE (see netmeta.metadata.http.Caps). false: no caps at all,
    # only the descriptor limit bounds connections — one guest can then starve
    # every other; it exists so a test can show what the caps prevent.
    metadata_connection_caps: bool = True
    # Nova's default: host names are "<hostname>.novalocal" in EC2 metadata.
    dhcp_domain: str = "novalocal"
    # JSON file served as vendor_data.json (empty: "{}").
    vendordata_jsonfile_path: str = ""
    # IMDSv2-style session tokens: "optional" (AWS's default), "required"
    # (IMDSv2 only), or "off" (no token endpoint, exactly like Nova: botocore
    # and cloud-init fall back to plain GETs on its 404).
    imds_tokens: str = "optional"
    # IP TTL of token responses, so a token cannot be relayed past the guest.
    imds_token_hop_limit: int = 1
    rate_limiting: RateLimitConfig = field(default_factory=RateLimitConfig)
    keystone_authtoken: KeystoneAuthtoken = field(default_factory=KeystoneAuthtoken)

    # --- metrics and health (see netmeta.metrics) ---
    # Where each component serves /metrics and /healthz: loopback by default
    # (metrics name networks and guests' addresses); empty turns it off;
    # port 0 picks a free port (published in the component's status file).
    server_metrics_bind: str = "127.0.0.1:9180"
    agent_metrics_bind: str = "127.0.0.1:9181"
    metadata_metrics_bind: str = "127.0.0.1:9182"

    # --- logs (see netmeta.logs) ---
    # "text" (one line for a person) or "json" (one object a line, for a shipper).
    log_format: str = "text"
    # Each component writes <state_dir>/log/<component>.log, rotated at this
    # size with this many old files kept: a flood can never fill the disk.
    log_max_bytes: int = 10 * 1024 * 1024
    log_backup_count: int = 3
    # Also log to stderr (a service manager's journal); `netmeta up` turns it
    # off for its children, whose logs are the files.
    log_console: bool = True

    def __post_init__(self) -> None:
        # dnsmasq chdir()s to / when it daemonizes: every path it is given
        # (pid, leases, opts) must be absolute, so the state directory is.
        object.__setattr__(self, "state_dir", os.path.abspath(self.state_dir))
        if not self.host:
            object.__setattr__(self, "host", socket.gethostname())
        parse_vni_ranges(self.vni_ranges)
        if self.dhcp_agents_per_network < 1:
            raise ConfigError("dhcp_agents_per_network must be at least 1")
        if not self.report_interval > 0 or not self.agent_down_time > 0:
            raise ConfigError("report_interval and agent_down_time must be positive numbers of seconds")
        if not 68 <= self.global_physnet_mtu <= 65535:
            raise ConfigError("global_physnet_mtu must be between 68 and 65535")
        if self.local_ip:
            try:
                ipaddress.ip_address(self.local_ip)
            except ValueError as exc:
                raise ConfigError(f"local_ip = {self.local_ip!r} is not an IP address") from exc
        try:
            mark = int(self.metadata_access_mark, 0)
        except ValueError:
            mark = -1
        if not 0 < mark <= 0xFFFF:
            raise ConfigError("metadata_access_mark must be a mark such as 0x1 (1 to 0xffff)")
        if self.metadata_listen and not self.metadata_proxy_shared_secret:
            raise ConfigError("metadata_listen needs metadata_proxy_shared_secret: without it anyone can sign")
        if self.metadata_workers < 0:
            raise ConfigError("metadata_workers must be 0 (one per CPU) or a number of processes")
        if not 1 <= self.metadata_listen_port <= 65535:
            raise ConfigError("metadata_listen_port must be a TCP port number")
        if not 3 <= self.min_rtr_adv_interval < self.max_rtr_adv_interval or self.max_rtr_adv_interval < 4:
            raise ConfigError("min_rtr_adv_interval must be at least 3 and below max_rtr_adv_interval (at least 4)")
        if self.dhcp_lease_duration <= 0 and self.dhcp_lease_duration != -1:
            raise ConfigError("dhcp_lease_duration must be positive or -1 (infinite)")
        if not 1 <= self.metadata_port <= 65535:
            raise ConfigError("metadata_port must be a TCP port number")
        if self.imds_tokens not in ("optional", "required", "off"):
            raise ConfigError("imds_tokens must be 'optional', 'required' or 'off'")
        if self.auth_strategy not in ("keystone", "noauth"):
            raise ConfigError("auth_strategy must be 'keystone' or 'noauth'")
        if self.auth_strategy == "noauth" and not bind_is_loopback(self.bind):
            raise ConfigError(
                f"auth_strategy = noauth makes every caller an admin: it is only allowed on a loopback bind "
                f"(127.0.0.1, ::1), not {self.bind}; use auth_strategy = keystone"
            )
        if self.metadata_backend not in ("local", "nova"):
            raise ConfigError("metadata_backend must be 'local' or 'nova'")
        if self.max_request_body_size < 1024:
            raise ConfigError("max_request_body_size must be at least 1024 bytes")
        if self.max_fixed_ips_per_port < 1:
            raise ConfigError("max_fixed_ips_per_port must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be 'text' or 'json'")
        if self.log_max_bytes < 4096 or self.log_backup_count < 1:
            raise ConfigError("log_max_bytes must be at least 4096 and log_backup_count at least 1")
        if self.vm_accel not in ("auto", "kvm", "tcg"):
            raise ConfigError("vm_accel must be 'auto', 'kvm' or 'tcg'")
        if not 128 <= self.vm_memory_mb <= 65536:
            raise ConfigError("vm_memory_mb must be between 128 and 65536")
        if not 1 <= self.vm_vcpus <= 64:
            raise ConfigError("vm_vcpus must be between 1 and 64")
        if self.image_dir:
            object.__setattr__(self, "image_dir", os.path.abspath(self.image_dir))
        if not 1 <= self.imds_token_hop_limit <= 255:
            raise ConfigError("imds_token_hop_limit must be between 1 and 255")

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.paths.store}"

    @property
    def embedded_identity(self) -> bool:
        """True when netmeta issues the tokens itself (keystone, no external auth_url)."""
        return self.auth_strategy == "keystone" and not self.keystone_authtoken.auth_url

    @property
    def dhcp_dir(self) -> str:
        """Where dnsmasq's files live: a directory dnsmasq's user can always reach.

        dnsmasq re-reads its hosts and opts files as ``nobody`` on SIGHUP; a
        state directory below one closed to others (root's home, a mkdtemp
        directory) — and the state directory itself, which is 0700 — would
        silently stop DHCP for every port created afterwards. So the files
        live under ``/run/netmeta/<id>/dhcp`` (``<id>``: the state directory's
        digest, so two state directories never share one; root-owned, 0755,
        holding dnsmasq's files and nothing else), and ``<state_dir>/dhcp``
        is a symbolic link to it (made by the agent, see
        :func:`netmeta.drivers.dnsmasq.adopt_layout`).
        """
        digest = hashlib.sha256(self.state_dir.encode()).hexdigest()[:12]
        return os.path.join(DHCP_RUNTIME_ROOT, digest, "dhcp")

    @property
    def api_url(self) -> str:
        return self.api_endpoints[0]

    @property
    def api_endpoints(self) -> tuple[str, ...]:
        """Every API URL to try, in order (``api_urls``, else the one at ``bind``)."""
        urls = tuple(u.rstrip("/") for u in self.api_urls.replace(" ", ",").split(",") if u)
        return urls or (f"http://{self.bind}",)

    @property
    def paths(self) -> StatePaths:
        """The state directory's layout (netmeta.model.paths): every path is asked of it."""
        return StatePaths(self.state_dir, dhcp_root_dir=self.dhcp_dir)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


VNI_MIN, VNI_MAX = 1, 2**24 - 1


def parse_vni_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"1:1000,2000:2100"`` as ((1, 1000), (2000, 2100)); Neutron's ``<vni_min>:<vni_max>`` syntax."""
    out: list[tuple[int, int]] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        lo, sep, hi = item.partition(":")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError as exc:
            raise ConfigError(f"vni_ranges: {item!r} is not <vni_min>:<vni_max>") from exc
        if not VNI_MIN <= first <= last <= VNI_MAX:
            raise ConfigError(f"vni_ranges: {item!r} must be within {VNI_MIN}:{VNI_MAX}, the smaller first")
        out.append((first, last))
    return tuple(out)


def bind_is_loopback(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, kind: Any, raw: str) -> Any:
    text = raw.strip()
    if kind in (bool, "bool"):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} = {raw!r}: expected true or false")
    if kind in (int, "int"):
        try:
            return int(text)
        except ValueError as exc:
            raise ConfigError(f"{name} = {raw!r}: expected an integer") from exc
    if kind in (float, "float"):
        try:
            return float(text)
        except ValueError as exc:
            raise ConfigError(f"{name} = {raw!r}: expected a number") from exc
    if kind in ("tuple[int, ...]",):
        try:
            return tuple(int(v) for v in text.replace(",", " ").split())
        except ValueError as exc:
            raise ConfigError(f"{name} = {raw!r}: expected a list of integers") from exc
    return text


def _section(cls: type, values: Mapping[str, str], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls) if f.name not in ("rate_limiting", "keystone_authtoken")}
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r} in [{where}]")
        out[key] = _coerce(key, known[key].type, raw)
    return out


def parse(text: str) -> Config:
    """Parse INI text into a :class:`Config`; unknown options are errors."""
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ConfigError(f"cannot parse config: {exc}") from exc
    main: dict[str, Any] = {}
    rate: dict[str, Any] = {}
    keystone: dict[str, Any] = {}
    for section in parser.sections():
        values = dict(parser.items(section))
        if section == "DEFAULT":
            main.update(_section(Config, values, section))
        elif section == "metadata_rate_limiting":
            rate.update(_section(RateLimitConfig, values, section))
        elif section == "keystone_authtoken":
            keystone.update(_section(KeystoneAuthtoken, values, section))
        else:
            raise ConfigError(f"unknown section [{section}]")
    return Config(**main, rate_limiting=RateLimitConfig(**rate), keystone_authtoken=KeystoneAuthtoken(**keystone))


def load(path: str | None, **overrides: Any) -> Config:
    """Read ``path`` (if given) and apply command-line overrides (``None`` = unset)."""
    config = Config()
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                config = parse(handle.read())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    changes = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**changes) if changes else config
