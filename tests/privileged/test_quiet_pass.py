"""A full pass at an unchanged revision changes nothing and says nothing at info level.

The stack's agent is stopped; a fresh reconciler (exactly what a full pass
is: nothing trusted, everything read back from the kernel) converges twice on
the same snapshot. Kernel objects keep their identities (namespace inodes,
link indexes, dnsmasq pids) and iptables its counters, the reports list no
change, and no log record at info or above is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import pytest

from netmeta.agent.reconciler import Reconciler
from netmeta.drivers import netns
from netmeta.model.types import snapshot_from_state
from typing import Iterator

from tests.privileged.stack import Stack, in_ns, make_stack

pytestmark = pytest.mark.privileged


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def kernel_view(stack: Stack, namespaces: list[str], nets: list[str]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for ns in namespaces:
        view[f"inode {ns}"] = netns.namespace_inode(ns)
        links = json.loads(in_ns(ns, "ip", "-j", "link").stdout or "[]")
        view[f"links {ns}"] = sorted((l["ifname"], l["ifindex"], l.get("address")) for l in links)
        addrs = json.loads(in_ns(ns, "ip", "-j", "addr").stdout or "[]")
        view[f"addrs {ns}"] = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in addrs for i in a["addr_info"])
        if ns.startswith("qrouter-"):
            saved = in_ns(ns, "iptables-save", "-c").stdout.splitlines()
            lines = [line for line in saved if not line.startswith("#")]  # comments hold a time
            # Rules as text, and each line's packet counter apart: a stray packet may raise a
            # counter while the pass runs, but a re-applied table would set them back to 0.
            view[f"iptables {ns}"] = [re.sub(r"\[\d+:\d+\]", "[-]", line) for line in lines]
            view[f"counters {ns}"] = [int(m.group(1)) for line in lines if (m := re.search(r"\[(\d+):\d+\]", line))]
    for net in nets:
        view[f"dnsmasq {net}"] = stack.dnsmasq_pid(net)
        for name in ("host", "opts", "addn_hosts"):
            path = os.path.join(stack.files_dir(net), name)
            st = os.stat(path)
            view[f"file {net} {name}"] = (st.st_ino, st.st_mtime_ns)
    return view


def test_a_full_pass_at_an_unchanged_revision_changes_nothing(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    net1, sub1 = stack.network("quiet1", "10.97.1.0/24")
    net2, _ = stack.network("quiet2", "10.97.2.0/24", gateway=False)
    router = stack.router("quiet-r", sub1)
    stack.boot("q1", net1["id"])
    stack.converged()
    stack.agent.stop()
    snapshot = snapshot_from_state(stack.client.state())
    namespaces = [f"qdhcp-{net1['id']}", f"qdhcp-{net2['id']}", f"qrouter-{router['id']}", stack.config.fabric_namespace]
    before = kernel_view(stack, namespaces, [net1["id"], net2["id"]])
    caplog.set_level(logging.INFO)
    reconciler = Reconciler(stack.config)
    try:
        reports = [reconciler.converge(snapshot, full=True) for _ in range(2)]
    finally:
        reconciler.close()
    after = kernel_view(stack, namespaces, [net1["id"], net2["id"]])
    counters = [key for key in before if key.startswith("counters ")]
    for key in counters:
        assert all(a >= b for a, b in zip(after.pop(key), before.pop(key), strict=True)), key
    assert after == before
    for report in reports:
        assert not report.changed and not report.failed, (report.applied, report.spawned, report.signalled,
                                                          report.removed, report.failed)
    loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO
            and r.name.startswith("netmeta")]
    assert not loud, loud
