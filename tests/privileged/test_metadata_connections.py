"""Connection caps hold across workers, and /metrics shows them.

With ``metadata_workers = 2`` a guest opens twice its per-port cap: it holds
one cap in all, not one per worker (counts in shared memory). The metadata
endpoint's ``netmeta_metadata_connections_open`` and
``..._connections_refused_total{reason}`` say the same. A worker killed with
its share of the guest's connections: the replacement forgets them (the
guest may open its cap again) and so does the gauge (the supervisor marks the
dead worker's metrics dead). The guest's client runs in its own namespace.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any, Iterator

import pytest

from netmeta.metadata.http import Caps
from netmeta.metadata.service import read_status as metadata_status
from tests.functional.test_metrics import value
from tests.privileged.stack import Stack, make_stack, wait_until
from tests.privileged.test_stack_metrics import scrape

pytestmark = pytest.mark.privileged

WORKERS = 2

# A guest that opens connections on command and reports how many the server still keeps.
HOLDER = r"""
import json, select, socket, sys, time
held = []

def alive():
    poller = select.poll()
    for s in held:
        poller.register(s, select.POLLIN)
    gone = {fd for fd, _ in poller.poll(0)}  # readable: closed or reset by the server
    for s in [s for s in held if s.fileno() in gone]:
        held.remove(s)
        s.close()
    return len(held)

for line in sys.stdin:
    words = line.split()
    if words[0] == "open":
        for _ in range(int(words[1])):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("169.254.169.254", 80))
            except OSError:
                s.close()
                continue
            held.append(s)
    time.sleep(float(words[-1]))  # let every worker accept (or refuse) what is queued
    print(json.dumps({"held": alive()}), flush=True)
"""


@pytest.fixture
def two_workers() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, metadata_workers=WORKERS)


def workers(stack: Stack) -> list[dict[str, Any]]:
    status = metadata_status(stack.config.state_dir) or {}
    return list(status.get("workers", []))


def ask(holder: subprocess.Popen[str], command: str) -> int:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(command + "\n")
    holder.stdin.flush()
    return int(json.loads(holder.stdout.readline())["held"])


def open_gauge(stack: Stack) -> float:
    return value(scrape(stack, "metadata"), "netmeta_metadata_connections_open")


def test_a_guest_holds_one_cap_across_workers_and_metrics_count_it(two_workers: Stack) -> None:
    stack = two_workers
    # Each worker raises its soft limit to the hard one it inherits from here.
    caps = Caps.from_open_files(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    net, _ = stack.network("caps", "10.77.0.0/24", gateway=False)
    guest = stack.boot("caps1", net["id"])
    assert stack.fetch(guest, "/openstack/latest/meta_data.json")
    pids = [int(w["pid"]) for w in wait_until(lambda: len(workers(stack)) == WORKERS and workers(stack),
                                              "every worker")]
    wait_until(lambda: open_gauge(stack) == 0, "no connection open before")
    holder = subprocess.Popen(["ip", "netns", "exec", guest.namespace, sys.executable, "-c", HOLDER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tried = 2 * caps.per_port + 20
        held = ask(holder, f"open {tried} 1.5")
        # One cap for the guest in all (a race between the workers may let one more in), not one per worker.
        assert caps.per_port - 1 <= held <= caps.per_port + WORKERS - 1, (held, caps)
        # The workers add their tallies to the metrics on their next tick (0.5 s).
        samples = wait_until(lambda: (s := scrape(stack, "metadata"))
                             and value(s, "netmeta_metadata_connections_open") == held and s,
                             f"connections_open == {held}", timeout=10)
        print("held", held, "of", tried, {k[0]: v for k, v in samples.items() if "connections" in k[0]})
        refused = value(samples, "netmeta_metadata_connections_refused_total", reason="port")
        assert tried - held - 5 <= refused <= tried - held, (refused, tried, held)
        # Both workers hold some of them: the kernel spread the connections.
        fds = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in pids}
        # A worker dies with its share; its replacement starts from what is really open.
        os.kill(pids[1], signal.SIGKILL)
        wait_until(lambda: (ws := workers(stack)) and int(ws[1]["pid"]) not in (0, pids[1])
                   and ("network", net["id"]) in {(l["kind"], l["id"]) for l in ws[1]["listeners"]},
                   "worker 1 replaced and listening", timeout=30)
        survivors = ask(holder, "count 0.5")
        assert 0 < survivors < held, (survivors, held, fds)
        # The dead worker's gauge is gone from the sum (mark_process_dead), only the survivor's counts.
        wait_until(lambda: open_gauge(stack) == survivors, f"connections_open == {survivors}", timeout=10)
        # ... and its share of the guest's cap is free again.
        again = ask(holder, f"open {caps.per_port} 1.5")
        assert caps.per_port - 1 <= again <= caps.per_port + WORKERS - 1, (again, survivors, caps)
        assert open_gauge(stack) == again
        print("after the kill: survivors", survivors, "then", again)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
