"""Agents' heartbeats: what each netmeta process reports to the server, and how often.

Neutron's agents call ``report_state`` every ``report_interval`` seconds
(``[agent]``, 30 s); the server shows an agent ``alive`` while its last
report is at most ``agent_down_time`` old and schedules networks and routers
onto agents that are. netmeta's processes do the same over HTTP
(``POST /netmeta/v1/report_state``, :mod:`netmeta.server.agents`):

* ``netmeta agent`` is three of Neutron's agents in one process, so it
  reports three rows: the **DHCP agent** (it runs the qdhcp namespaces and
  dnsmasq), the **L3 agent** (the qrouter namespaces) and the **Linux bridge
  agent** — the L2 part, bridges and VXLAN devices, and the row where
  Neutron keeps a host's ``tunneling_ip`` (``[vxlan] local_ip``), which every
  other host needs for its VXLAN forwarding entries;
* ``netmeta metadata`` reports the **Metadata agent**.

The first report of each row carries ``start_flag`` (the server sets
``started_at`` and hands the agent whatever has no host). A report that
fails is retried within a second, on the next API URL if several are given.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from netmeta.config import Config
from netmeta.credentials import AuthFailed, TokenSource
from netmeta.endpoints import Endpoints
from netmeta.model.types import AGENT_DHCP, AGENT_L2, AGENT_L3, AGENT_METADATA

log = logging.getLogger("netmeta.reporting")


def agent_rows(config: Config) -> list[dict[str, Any]]:
    """The rows ``netmeta agent`` reports (Neutron's binaries, topics and configuration keys)."""
    tunnel_types = ["vxlan"] if config.local_ip else []
    return [
        {"agent_type": AGENT_DHCP, "binary": "neutron-dhcp-agent", "topic": "dhcp_agent", "host": config.host,
         "availability_zone": "nova",
         "configurations": {"dhcp_driver": "netmeta.dnsmasq", "dhcp_lease_duration": config.dhcp_lease_duration,
                            "enable_isolated_metadata": config.enable_isolated_metadata,
                            "force_metadata": config.force_metadata, "log_agent_heartbeats": False}},
        {"agent_type": AGENT_L3, "binary": "neutron-l3-agent", "topic": "l3_agent", "host": config.host,
         "availability_zone": "nova",
         "configurations": {"agent_mode": "legacy", "interface_driver": "linuxbridge",
                            "enable_metadata_proxy": config.enable_metadata_proxy,
                            "metadata_port": config.metadata_port, "log_agent_heartbeats": False}},
        {"agent_type": AGENT_L2, "binary": "neutron-linuxbridge-agent", "topic": "N/A", "host": config.host,
         "availability_zone": None,
         "configurations": {"tunneling_ip": config.local_ip, "tunnel_types": tunnel_types,
                            "l2_population": True, "interface_mappings": {}, "bridge_mappings": {},
                            "extensions": []}},
    ]


def metadata_rows(config: Config) -> list[dict[str, Any]]:
    return [
        {"agent_type": AGENT_METADATA, "binary": "neutron-metadata-agent", "topic": "N/A", "host": config.host,
         "availability_zone": None,
         "configurations": {"metadata_backend": config.metadata_backend,
                            "nova_metadata_host": config.nova_metadata_host,
                            "nova_metadata_port": config.nova_metadata_port,
                            "metadata_workers": config.metadata_workers, "log_agent_heartbeats": False}},
    ]


class Reporter:
    """Reports ``rows`` every ``report_interval`` seconds until cancelled."""

    def __init__(self, config: Config, rows: list[dict[str, Any]], tokens: TokenSource | None,
                 endpoints: Endpoints | None = None) -> None:
        self.rows = rows
        self.tokens = tokens
        self.endpoints = endpoints or Endpoints(config.api_endpoints)
        self.interval = config.report_interval
        self.reported = asyncio.Event()  # every row registered at least once
        self.agent_ids: dict[str, str] = {}
        self._started: set[str] = set()
        self._failing = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(2.0, min(10.0, self.interval)))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                ok = await self.report_once(session)
                await asyncio.sleep(self.interval if ok else min(1.0, self.interval))

    async def report_once(self, session: aiohttp.ClientSession) -> bool:
        try:
            for row in self.rows:
                await self._report(session, row)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, AuthFailed) as exc:
            if not self._failing:
                log.warning("cannot report to %s (%s); retrying", self.endpoints.current, exc)
            self._failing = True
            self.endpoints.failed()
            return False
        if self._failing:
            log.info("reporting again to %s", self.endpoints.current)
        self._failing = False
        self.reported.set()
        return True

    async def _report(self, session: aiohttp.ClientSession, row: dict[str, Any]) -> None:
        state = dict(row, start_flag=row["agent_type"] not in self._started)
        headers = {"X-Auth-Token": await self.tokens.aget()} if self.tokens is not None else {}
        url = f"{self.endpoints.current}/netmeta/v1/report_state"
        async with session.post(url, json={"agent_state": state}, headers=headers) as resp:
            if resp.status == 401 and self.tokens is not None:
                self.tokens.invalidate()
            resp.raise_for_status()
            body = await resp.json()
        self.agent_ids[row["agent_type"]] = body["agent"]["id"]
        self._started.add(row["agent_type"])
