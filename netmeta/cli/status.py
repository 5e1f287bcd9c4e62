"""``netmeta status [--json]``: what an operator reads first when something is wrong.

One screen: each component (running? healthy? which change-feed revision has
it seen?), then every network with its DHCP and metadata state, routers,
listeners and guests — each compared with what the API data says should be
there, so a missing dnsmasq or listener is named, not inferred. With several
hosts, the agents of every host (alive or down), and a network or router
hosted by another host's agent is named with that host instead of being
looked for here (netmeta.model.placement).

Only reads: status files, ``/healthz``, the API, ``/proc`` and
``/run/netns``. Exit status 0 when everything is as it should be, 1 when a
component or an agent is down or failing, 3 when something wanted is missing.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from netmeta.client import ApiError, Client
from netmeta.config import Config
from netmeta.model import placement

COMPONENTS = ("server", "agent", "metadata")


def _health(address: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=2.0) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        try:
            failed: dict[str, Any] = json.loads(exc.read())
            return failed
        except ValueError:
            return {"status": "failing", "error": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"status": "unreachable", "error": str(getattr(exc, "reason", exc))}


def _remote_api(config: Config) -> bool:
    """Whether this host's components follow a server elsewhere (``api_urls``, or a bind that is not loopback)."""
    host = config.bind.rpartition(":")[0].strip("[]")
    return bool(config.api_urls) or host not in ("", "127.0.0.1", "localhost", "::1", "0.0.0.0", "::")


def _alive(pid: Any) -> bool:
    from netmeta.drivers import processes

    return isinstance(pid, int) and processes.matches(pid, "netmeta")


def gather(config: Config) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-able document."""
    from netmeta.drivers import netns, processes
    from netmeta.metadata.service import desired_listeners
    from netmeta.model import hosting, names
    from netmeta.model.types import AGENT_DHCP, AGENT_L3
    from netmeta.model.dhcp import dhcp_listener_wanted, dhcp_port
    from netmeta.model.types import snapshot_from_state
    from netmeta.vm.guests import Guests

    out: dict[str, Any] = {"state_dir": config.state_dir, "api": config.api_url, "components": {}}
    from netmeta.cli.commands import component_status

    for name in COMPONENTS:
        status = component_status(config, name) or {}
        if name == "server" and not status and _remote_api(config):
            # No server here (a host of several): the one this host's components follow, judged by its answer.
            out["components"][name] = {"pid": None, "running": True, "remote": True, "metrics": "",
                                       "health": "unreachable"}
            continue
        pid = status.get("pid")
        entry: dict[str, Any] = {"pid": pid, "running": _alive(pid), "metrics": status.get("metrics") or ""}
        if "revision" in status:
            entry["revision"] = status["revision"]
        if entry["running"] and entry["metrics"]:
            health = _health(entry["metrics"])
            entry["health"] = health.get("status", "unknown")
            entry["health_detail"] = {k: v for k, v in health.items() if k not in ("component", "status")}
        else:
            entry["health"] = "down" if not entry["running"] else "no endpoint"
        out["components"][name] = entry

    client = Client.for_config(config, admin=True, timeout=5.0)
    try:
        snapshot = snapshot_from_state(client.state())
    except ApiError as exc:
        out["components"]["server"]["api_error"] = exc.message
        out["networks"], out["routers"], out["listeners"], out["guests"] = [], [], [], []
        return out
    out["components"]["server"]["revision"] = snapshot.revision
    if out["components"]["server"].get("remote"):
        out["components"]["server"]["health"] = "ok"
    states = _agent_states(client)
    out["agents"] = [{"host": a.host, "agent_type": a.agent_type, "id": a.id, "alive": a.alive,
                      "admin_state_up": a.admin_state_up, "state": a.state}
                     for a in sorted(states.values(), key=lambda a: (a.host, a.agent_type, a.id))]
    here = snapshot.for_host(config.host)
    metadata = component_status(config, "metadata") or {}
    open_listeners = {(l["kind"], l["id"]): l for l in metadata.get("listeners", [])}
    wanted = desired_listeners(snapshot, config)

    networks = []
    for net_id, network in sorted(snapshot.networks.items(), key=lambda kv: (kv[1].name, kv[0])):
        dhcp_subnets = [s.cidr for s in snapshot.subnets.values() if s.network_id == net_id and s.enable_dhcp]
        ns = names.dhcp_namespace(net_id)
        entry = {"id": net_id, "name": network.name, "admin_state_up": network.admin_state_up,
                 "dhcp_subnets": dhcp_subnets, "namespace": ns}
        if not network.admin_state_up:
            entry["dhcp"] = "off: network admin-down"
        elif not dhcp_subnets:
            entry["dhcp"] = "off: no subnet with DHCP"
        elif dhcp_port(snapshot, net_id) is None:
            entry["dhcp"] = "MISSING: no DHCP port yet (is the agent running?)"
        elif hosting.scheduled(here, AGENT_DHCP) and hosting.local_dhcp_port(here, net_id) is None:
            entry["dhcp"] = _elsewhere(placement.network_dhcp_agents(snapshot, net_id), states)
        else:
            pid_file = config.paths.dhcp_file(net_id, "pid")
            pid = processes.running_pid(pid_file, net_id)
            present = netns.namespace_exists(ns)
            entry["dhcp"] = (f"serving (dnsmasq {pid})" if pid and present else
                             "MISSING: namespace not there" if not present else "MISSING: dnsmasq not running")
        if ("network", net_id) in wanted:
            entry["metadata"] = "listening" if ("network", net_id) in open_listeners else "MISSING: no listener"
        elif network.admin_state_up and dhcp_subnets and not dhcp_listener_wanted(snapshot, net_id, config):
            entry["metadata"] = "via router or off (enable_isolated_metadata / force_metadata)"
        else:
            entry["metadata"] = "off"
        networks.append(entry)
    out["networks"] = networks

    routers = []
    for router_id, router in sorted(snapshot.routers.items(), key=lambda kv: (kv[1].name, kv[0])):
        ns = names.router_namespace(router_id)
        interfaces = len(snapshot.router_ports(router_id))
        entry = {"id": router_id, "name": router.name, "admin_state_up": router.admin_state_up,
                 "interfaces": interfaces, "namespace": ns}
        if hosting.scheduled(here, AGENT_L3) and not hosting.hosts_router(here, router_id) and interfaces:
            entry["state"] = _elsewhere(placement.router_l3_agents(snapshot, router_id), states)
        elif ("router", router_id) in wanted:
            present = netns.namespace_exists(ns)
            listening = ("router", router_id) in open_listeners
            entry["state"] = ("serving" if present and listening else
                              "MISSING: namespace not there" if not present else "MISSING: no listener")
        else:
            entry["state"] = "off: admin-down" if not router.admin_state_up else \
                "off: no interfaces" if not interfaces else "off"
        routers.append(entry)
    out["routers"] = routers
    out["listeners"] = sorted(open_listeners.values(), key=lambda l: (l["kind"], l["id"]))

    guests = []
    for guest in Guests(config).list_all():
        pid = processes.read_pid_file(guest.paths.pid)
        guests.append({"name": guest.name, "ip": guest.ip, "instance": guest.instance_id,
                       "namespace": guest.namespace, "present": netns.namespace_exists(guest.namespace),
                       "dhclient": bool(pid and processes.pid_alive(pid)),
                       "instance_known": guest.instance_id in snapshot.instances})
    out["guests"] = guests
    return out


def _agent_states(client: Client) -> dict[str, placement.AgentState]:
    try:
        rows = client.get("/v2.0/agents").get("agents", [])
    except (ApiError, OSError, AttributeError):
        return {}
    return placement.agent_states([r for r in rows if isinstance(r, dict)])


def _elsewhere(agents: list[tuple[str, str]], states: dict[str, placement.AgentState]) -> str:
    """A network or router hosted by other hosts' agents: which, and whether they are alive."""
    if not agents:
        return "MISSING: no agent hosts it"
    named = ", ".join(f"{host} ({states[aid].state if aid in states else 'unknown'})" for aid, host in agents)
    down = bool(states) and any(aid not in states or not states[aid].working for aid, _ in agents)
    return ("AGENT DOWN: " if down else "") + f"on {named}"


def verdict(report: dict[str, Any]) -> int:
    components = report["components"].values()
    if any(not c["running"] or c["health"] in ("failing", "unreachable") for c in components):
        return 1
    if any(not a["alive"] for a in report.get("agents", [])):
        return 1
    text = json.dumps([report["networks"], report["routers"]])
    if "MISSING" in text or "AGENT DOWN" in text or any(not g["present"] or not g["dhclient"] for g in report["guests"]):
        return 3
    return 0


def render(report: dict[str, Any]) -> str:
    lines = [f"netmeta status — API {report['api']}, state {report['state_dir']}", ""]
    lines.append(f"{'COMPONENT':10} {'STATE':9} {'HEALTH':12} {'REVISION':>8}  METRICS")
    for name, c in report["components"].items():
        state = "remote" if c.get("remote") else "running" if c["running"] else "stopped"
        revision = str(c.get("revision", "-"))
        detail = c.get("api_error") or ""
        extra = c.get("health_detail", {})
        if extra.get("missing"):
            detail = "missing listeners: " + ", ".join(extra["missing"][:3])
        elif extra.get("reason"):
            detail = extra["reason"]
        lines.append(f"{name:10} {state:9} {c['health']:12} {revision:>8}  {c['metrics'] or '-'}  {detail}".rstrip())
    agents = report.get("agents", [])
    if agents:
        hosts: dict[str, list[dict[str, Any]]] = {}
        for a in agents:
            hosts.setdefault(a["host"], []).append(a)
        lines += ["", f"AGENTS ({len(agents)} on {len(hosts)} hosts)"]
        for host, those in hosts.items():
            lines.append(f"  {host:16} " + ", ".join(f"{a['agent_type']} {a['state']}" for a in those))
    lines += ["", f"NETWORKS ({len(report['networks'])})"]
    for n in report["networks"]:
        lines.append(f"  {n['name'] or '-':20} {n['id'][:8]}  dhcp {n['dhcp']:32}  metadata {n['metadata']}")
    lines += ["", f"ROUTERS ({len(report['routers'])})"]
    for r in report["routers"]:
        lines.append(f"  {r['name'] or '-':20} {r['id'][:8]}  {r['interfaces']} interfaces  {r['state']}")
    lines += ["", f"LISTENERS ({len(report['listeners'])})"]
    for l in report["listeners"]:
        lines.append(f"  {l['kind']:8} {l['namespace']:52} {l['host']}:{l['port']}")
    lines += ["", f"GUESTS ({len(report['guests'])})"]
    for g in report["guests"]:
        problems = [p for p, bad in (("namespace missing", not g["present"]), ("no dhclient", not g["dhclient"]),
                                     ("instance deleted", not g["instance_known"])) if bad]
        lines.append(f"  {g['name']:16} {g['ip']:16} {g['instance'][:8]}  {', '.join(problems) or 'ok'}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    report = gather(config)
    code = verdict(report)
    report["verdict"] = {0: "ok", 1: "component or agent down or failing", 3: "something wanted is missing"}[code]
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render(report))
        print(f"\n{report['verdict']}")
    return code
