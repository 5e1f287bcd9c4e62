"""Several simulated hosts for one test: the fixture side of netmeta.cli.multihost.

:func:`make_cloud` starts one API server on this machine's loopback and, per
host name, a simulated host (its own mount + network namespace, an underlay
address) running its own agent and metadata process; at the end everything
is stopped by pid and removed — also when the test fails — and the test
fails if anything was left behind (a namespace with the prefix, a process
inside a host).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from netmeta.cli import multihost
from netmeta.client import Client
from netmeta.cli.multihost import MultiHost
from netmeta.drivers import netns, processes

HOSTS = ("host-1", "host-2", "host-3")


def make_cloud(hosts: Sequence[str] = HOSTS, *, components: Sequence[str] = ("agent", "metadata"),
               **settings: Any) -> Iterator[tuple[MultiHost, Client]]:
    prefix = f"nmt{uuid.uuid4().hex[:8]}-"
    base = tempfile.mkdtemp(prefix=prefix)
    os.chmod(base, 0o755)  # dnsmasq (as nobody) traverses every host's state directory
    multi = multihost.start(base, prefix, hosts, settings, components=components)
    problems: list[str] = []
    try:
        yield multi, Client.for_config(multi.config, admin=True)
    finally:
        holders = [h.sim.holder_pid for h in multi.hosts]
        problems = multi.close(keep_logs=os.environ.get("NETMETA_KEEP_LOGS"))
        left = [n for n in netns.list_namespaces() if n.startswith(prefix)]
        assert not left, f"namespaces left behind: {left}"
        assert not [pid for pid in holders if processes.pid_alive(pid)], "a simulated host's holder survived"
        assert not problems, "cleanup problems:\n" + "\n".join(problems)
