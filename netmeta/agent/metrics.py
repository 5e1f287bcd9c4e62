"""The agent's metrics: what each pass took and changed, and how far behind it is.

* ``netmeta_agent_pass_duration_seconds{kind}`` (``full`` re-reads the
  kernel, ``quick`` trusts what was applied) and
  ``netmeta_agent_passes_total{kind,result}`` (``changed``, ``unchanged``,
  ``failed``).
* ``netmeta_agent_objects_changed_total{action}``: applied, removed,
  signalled, spawned — and ``netmeta_agent_pass_objects_changed``, a
  histogram of how many objects one pass changed (a pass at an unchanged
  revision should change none).
* ``netmeta_agent_revision_seen`` (the feed's newest), ``..._applied`` and
  ``..._lag`` (their difference: how far the host is behind the API).
* ``netmeta_agent_dnsmasq_starts_total`` and ``..._respawns_total`` (a
  dnsmasq found dead and started again).
* ``netmeta_agent_errors_total{network}``: failed objects, by network id
  (routers count under their router id).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PASS_DURATION = Histogram(
    "netmeta_agent_pass_duration_seconds", "Time one reconcile pass took", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PASSES = Counter("netmeta_agent_passes", "Reconcile passes", ["kind", "result"])
OBJECTS_CHANGED = Counter("netmeta_agent_objects_changed", "Objects a pass changed", ["action"])
PASS_CHANGES = Histogram("netmeta_agent_pass_objects_changed", "Objects changed by one pass",
                         buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000))
REVISION_SEEN = Gauge("netmeta_agent_revision_seen", "Newest change-feed revision the agent has seen")
REVISION_APPLIED = Gauge("netmeta_agent_revision_applied", "Revision the host has converged on")
REVISION_LAG = Gauge("netmeta_agent_revision_lag", "Revisions the host is behind the feed")
DNSMASQ_STARTS = Counter("netmeta_agent_dnsmasq_starts", "dnsmasq processes started")
DNSMASQ_RESPAWNS = Counter("netmeta_agent_dnsmasq_respawns", "dnsmasq processes found dead and started again")
ERRORS = Counter("netmeta_agent_errors", "Objects that failed to converge, by network (or router)", ["network"])
