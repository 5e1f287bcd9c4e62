"""Which agent hosts which network and router: Neutron's schedulers, inside the write transaction.

Neutron's server binds each network to ``dhcp_agents_per_network`` DHCP
agents (``networkdhcpagentbindings``) and each router to one L3 agent
(``routerl3agentbindings``); every DHCP agent then makes its own DHCP port
on the network. netmeta does both in the same transaction as the change
that calls for them, so a snapshot never shows a network hosted by an agent
without its port:

* a binding is a ``bindings`` row (``network_id`` or ``router_id``, the
  agent's id and host), part of the change feed, so every agent knows what
  its host must build (:mod:`netmeta.model.hosting`);
* each bound DHCP agent has one ``network:dhcp`` port with Neutron's
  ``device_id`` ``dhcp<uuid5(host)>-<network>`` and ``binding:host_id`` =
  its host (:func:`netmeta.server.dhcp_port.sync_dhcp_port`); when a
  network moves, the leaving agent's port is handed to the new one, so its
  addresses — the ones guests hold routes to — stay;
* a router's interface ports carry its L3 agent's host in
  ``binding:host_id``, as Neutron's legacy routers do.

Scheduling picks the least loaded eligible agent (alive and admin up; ties
by host name), as Neutron's default weight schedulers do. Networks are
scheduled when they gain a DHCP subnet, when an agent registers or comes
back, and by :func:`check_agents` (run every ``agent_down_time / 2``
seconds by every server): a network moves off a DHCP agent that is dead or
admin down whenever another eligible agent exists (Neutron's
``allow_automatic_dhcp_failover``; with no eligible agent at all it stays,
as Neutron's "no DHCP agents available, skipping rescheduling"). Routers
move the same way only with ``allow_automatic_l3agent_failover`` (off by
default, as in Neutron); otherwise ``openstack network agent remove/add
router`` moves one. ``allow_automatic_dhcp_failover`` (on) turns the
networks' moves off.

Before any DHCP agent has ever registered (a server alone, as the
functional tests run it) there are no bindings and the network keeps one
unbound DHCP port, exactly as netmeta did on one host; the first DHCP agent
to register adopts them all.
"""

from __future__ import annotations

import random
import time
from typing import Any, Iterable

from netmeta.model.types import AGENT_DHCP, AGENT_L3
from netmeta.server.standard_attrs import new_id
from netmeta.store.database import Txn

DEFAULT_DOWN_TIME = 75.0


def now() -> float:
    return time.time()


def _settings(txn: Txn, name: str, default: Any) -> Any:
    return getattr(txn.settings, name, default) if txn.settings is not None else default


def down_time(txn: Txn) -> float:
    return float(_settings(txn, "agent_down_time", DEFAULT_DOWN_TIME))


def is_alive(heartbeat: Any, at: float, limit: float) -> bool:
    try:
        return at - float(heartbeat) <= limit
    except (TypeError, ValueError):
        return False


def agents_of(txn: Txn, agent_type: str) -> list[dict[str, Any]]:
    return sorted(txn.select("agents", agent_type=agent_type), key=lambda a: (a["host"], a["id"]))


def eligible(txn: Txn, agent_type: str, at: float | None = None) -> list[dict[str, Any]]:
    """Agents that may take new work: alive and admin up."""
    at = now() if at is None else at
    beats = txn.column_values("agents", "heartbeat_at")
    limit = down_time(txn)
    return [a for a in agents_of(txn, agent_type) if a.get("admin_state_up", True)
            and is_alive(beats.get(a["id"]), at, limit)]


# --- bindings ------------------------------------------------------------------


def network_bindings(txn: Txn, network_id: str) -> list[dict[str, Any]]:
    return sorted(txn.select("bindings", network_id=network_id), key=lambda b: (b["host"], b["id"]))


def router_binding(txn: Txn, router_id: str) -> dict[str, Any] | None:
    found = txn.select("bindings", router_id=router_id)
    return found[0] if found else None


def agent_bindings(txn: Txn, agent_id: str) -> list[dict[str, Any]]:
    return txn.select("bindings", agent_id=agent_id)


def _load(txn: Txn, of_networks: bool) -> dict[str, int]:
    """How many networks (or routers) each agent hosts: counted by the database, no document parsed."""
    return txn.count_by("bindings", "agent_id", nonempty="network_id" if of_networks else "router_id")


def _pick(candidates: Iterable[dict[str, Any]], load: dict[str, int]) -> dict[str, Any] | None:
    ordered = sorted(candidates, key=lambda a: (load.get(a["id"], 0), a["host"], a["id"]))
    return ordered[0] if ordered else None


def bind(txn: Txn, agent: dict[str, Any], *, network_id: str | None = None,
         router_id: str | None = None) -> dict[str, Any]:
    obj = {"id": new_id(), "agent_id": agent["id"], "host": agent["host"],
           "network_id": network_id, "router_id": router_id, "created_at": txn.now}
    txn.add("bindings", obj)
    return obj


def unbind(txn: Txn, binding: dict[str, Any]) -> None:
    txn.remove("bindings", binding)


# --- networks ------------------------------------------------------------------


def serves_dhcp(txn: Txn, network_id: str) -> bool:
    return any(s["enable_dhcp"] and s["ip_version"] == 4 for s in txn.select("subnets", network_id=network_id))


def schedule_network(txn: Txn, network_id: str, load: dict[str, int] | None = None) -> bool:
    """Bind the network to more DHCP agents until it has ``dhcp_agents_per_network``; True if any."""
    wanted = int(_settings(txn, "dhcp_agents_per_network", 1))
    bound = network_bindings(txn, network_id)
    if len(bound) >= wanted:
        return False
    taken = {b["agent_id"] for b in bound}
    candidates = [a for a in eligible(txn, AGENT_DHCP) if a["id"] not in taken]
    load = _load(txn, True) if load is None else load
    changed = False
    while len(bound) < wanted:
        agent = _pick(candidates, load)
        if agent is None:
            break
        candidates.remove(agent)
        bound.append(bind(txn, agent, network_id=network_id))
        load[agent["id"]] = load.get(agent["id"], 0) + 1
        changed = True
    return changed


def _sync_ports(txn: Txn, network_id: str) -> None:
    from netmeta.server import dhcp_port  # dhcp_port builds on this module

    network = txn.get("networks", network_id)
    if network is not None:
        dhcp_port.sync_dhcp_port(txn, network, random.randbytes)


def auto_schedule_networks(txn: Txn, only_unhosted: bool = False) -> None:
    """Every network that serves DHCP with fewer agents than wanted gets more (Neutron's network_auto_schedule).

    The periodic check passes ``only_unhosted``: a network an admin took off
    one of its agents keeps serving from the others until an agent registers.
    """
    wanted = 1 if only_unhosted else int(_settings(txn, "dhcp_agents_per_network", 1))
    counts: dict[str, int] = {}
    for network_id, agent_id in txn.column_rows("bindings", "network_id", "agent_id"):
        if network_id:
            counts[network_id] = counts.get(network_id, 0) + 1
    dhcp_nets = {s["network_id"] for s in txn.select("subnets") if s["enable_dhcp"] and s["ip_version"] == 4}
    load = _load(txn, True)
    for network_id in sorted(dhcp_nets):
        if counts.get(network_id, 0) < wanted and schedule_network(txn, network_id, load):
            _sync_ports(txn, network_id)


def adopt_unbound_ports(txn: Txn) -> None:
    """The first DHCP agent's registration: unbound DHCP ports (one host, before agents) get bound."""
    from netmeta.model.types import DEVICE_OWNER_DHCP

    for network_id in sorted({p["network_id"] for p in txn.select("ports")
                              if p["device_owner"] == DEVICE_OWNER_DHCP and not p.get("binding:host_id")}):
        _sync_ports(txn, network_id)


def move_network(txn: Txn, binding: dict[str, Any], to: dict[str, Any]) -> None:
    """Hand a network from one DHCP agent to another; the leaving agent's port goes with it."""
    unbind(txn, binding)
    bind(txn, to, network_id=binding["network_id"])
    _sync_ports(txn, binding["network_id"])


def remove_network_bindings(txn: Txn, network_id: str) -> None:
    for binding in network_bindings(txn, network_id):
        unbind(txn, binding)


# --- routers -------------------------------------------------------------------


def router_host(txn: Txn, router_id: str) -> str:
    binding = router_binding(txn, router_id)
    return str(binding["host"]) if binding is not None else ""


def set_router_ports_host(txn: Txn, router_id: str) -> None:
    """A router's interface ports carry its L3 agent's host (Neutron's legacy routers)."""
    from netmeta.model.types import ROUTER_INTERFACE_OWNERS
    from netmeta.server.standard_attrs import save

    host = router_host(txn, router_id)
    for port in txn.select("ports", device_id=router_id):
        if port["device_owner"] in ROUTER_INTERFACE_OWNERS and port.get("binding:host_id", "") != host:
            port["binding:host_id"] = host
            save(txn, "ports", port)


def schedule_router(txn: Txn, router_id: str, load: dict[str, int] | None = None) -> bool:
    if router_binding(txn, router_id) is not None:
        return False
    agent = _pick(eligible(txn, AGENT_L3), _load(txn, False) if load is None else load)
    if agent is None:
        return False
    bind(txn, agent, router_id=router_id)
    if load is not None:
        load[agent["id"]] = load.get(agent["id"], 0) + 1
    set_router_ports_host(txn, router_id)
    return True


def auto_schedule_routers(txn: Txn) -> None:
    hosted = {r for _, r in txn.column_rows("bindings", "agent_id", "router_id") if r}
    load = _load(txn, False)
    for router_id in sorted(txn.find_ids("routers")):
        if router_id not in hosted:
            schedule_router(txn, router_id, load)


def remove_router_bindings(txn: Txn, router_id: str) -> None:
    binding = router_binding(txn, router_id)
    if binding is not None:
        unbind(txn, binding)


# --- agents coming, going, failing -------------------------------------------------


def on_agent_available(txn: Txn, agent: dict[str, Any]) -> None:
    """An agent registered, restarted or came back: give it what has no host."""
    if agent["agent_type"] == AGENT_DHCP:
        adopt_unbound_ports(txn)
        auto_schedule_networks(txn)
    elif agent["agent_type"] == AGENT_L3:
        auto_schedule_routers(txn)


def on_agent_removed(txn: Txn, agent: dict[str, Any]) -> None:
    """An agent deleted: its bindings go; networks and routers find another agent if they can."""
    for binding in agent_bindings(txn, agent["id"]):
        unbind(txn, binding)
        if binding.get("network_id"):
            schedule_network(txn, binding["network_id"])
            _sync_ports(txn, binding["network_id"])
        elif binding.get("router_id"):
            schedule_router(txn, binding["router_id"])
            set_router_ports_host(txn, binding["router_id"])


def check_agents(txn: Txn, at: float | None = None) -> None:
    """The periodic check: move work off dead or admin-down agents; host the networks that have no host."""
    at = now() if at is None else at
    good = eligible(txn, AGENT_DHCP, at)
    if good:
        if _settings(txn, "allow_automatic_dhcp_failover", True):
            _move_networks(txn, good)
        auto_schedule_networks(txn, only_unhosted=True)
    # Routers without a host are scheduled when they are made and when an L3
    # agent registers, restarts, comes back or is enabled — never here: a
    # router an admin just took off one agent (remove, then add elsewhere)
    # must not be handed back in between.
    good_l3 = eligible(txn, AGENT_L3, at)
    if good_l3 and _settings(txn, "allow_automatic_l3agent_failover", False):
        _move_routers(txn, good_l3)


def _move_networks(txn: Txn, good: list[dict[str, Any]]) -> None:
    load = _load(txn, True)
    good_ids = {a["id"] for a in good}
    for agent in agents_of(txn, AGENT_DHCP):
        if agent["id"] in good_ids:
            continue
        for binding in sorted(agent_bindings(txn, agent["id"]), key=lambda b: b["id"]):
            network_id = binding.get("network_id")
            if not network_id:
                continue
            taken = {b["agent_id"] for b in network_bindings(txn, network_id)}
            target = _pick([a for a in good if a["id"] not in taken], load)
            if target is None:
                continue
            move_network(txn, binding, target)
            load[target["id"]] = load.get(target["id"], 0) + 1


def _move_routers(txn: Txn, good: list[dict[str, Any]]) -> None:
    load = _load(txn, False)
    good_ids = {a["id"] for a in good}
    for agent in agents_of(txn, AGENT_L3):
        if agent["id"] in good_ids:
            continue
        for binding in sorted(agent_bindings(txn, agent["id"]), key=lambda b: b["id"]):
            router_id = binding.get("router_id")
            target = _pick(good, load) if router_id else None
            if router_id is None or target is None:
                continue
            unbind(txn, binding)
            bind(txn, target, router_id=router_id)
            set_router_ports_host(txn, router_id)
            load[target["id"]] = load.get(target["id"], 0) + 1
