"""No guest can starve the others: connection caps per resolved port, per listener, per process.

One metadata service serves every tenant. A guest holding many addresses
opens connections until it is refused, while a guest on another network
crawls its metadata every second; the crawl must not notice. The same attack
with ``metadata_connection_caps = false`` fills every worker's descriptor
table and the crawl fails: what the caps prevent. All clients run inside
their guest namespaces.

The attacker's loop runs at nice 19: on a real host a guest burns its own
vCPUs, not the service's; on a 2-core test machine it would otherwise take
the cores the service and the victim need, and the test would measure the
CPU scheduler instead of the caps.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from netmeta.metadata.http import Caps
from netmeta.metadata.service import read_status as metadata_status
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until
from tests.privileged.test_port_security import _reaches_metadata_from, set_port_security

pytestmark = pytest.mark.privileged

EXTRA_ADDRESSES = 40
CRAWL_SECONDS = 6
P99_MS = 50.0  # the bound for the victim's crawl under attack
# The attacker's CPU is not the service's (see the docstring).
ATTACKER_CPU = ["nice", "-n", "19"]

ATTACK = r"""
import json, select, socket, sys, time
addrs = sys.argv[2:]
end = time.monotonic() + float(sys.argv[1])
held, refused, attempts = {}, 0, 0
poller = select.poll()
poller.register(0, select.POLLIN)  # stdin closed by the test: stop
stopped = False
while not stopped and time.monotonic() < end and attempts < 30000:
    for addr in addrs:
        s = socket.socket()
        s.bind((addr, 0))
        s.settimeout(0.5)
        attempts += 1
        try:
            s.connect(("169.254.169.254", 80))
        except OSError:
            refused += 1
            s.close()
            continue
        held[s.fileno()] = s
        poller.register(s, select.POLLIN)
    for fd, _ in poller.poll(0):  # readable: closed (or reset) by the server, i.e. refused
        if fd == 0:
            stopped = True
            continue
        s = held.pop(fd)
        poller.unregister(fd)
        refused += 1
        s.close()
# A connection the kernel completed but the service has not refused yet is not held: before
# counting, read the closes still in flight (until none arrives for 0.3 s, at most 2 s).
poller.unregister(0)
settle = time.monotonic() + 2
while held and time.monotonic() < settle:
    ready = [fd for fd, _ in poller.poll(300)]
    if not ready:
        break
    for fd in ready:
        poller.unregister(fd)
        held.pop(fd).close()
        refused += 1
print(json.dumps({"held": len(held), "refused": refused, "attempts": attempts}))
"""

CRAWL = r"""
import http.client, json, sys, time
paths = ["/openstack", "/openstack/latest/meta_data.json", "/openstack/latest/network_data.json",
         "/openstack/latest/vendor_data.json", "/openstack/latest/vendor_data2.json", "/openstack/latest/user_data",
         "/latest/meta-data/", "/latest/meta-data/instance-id", "/latest/meta-data/hostname",
         "/latest/meta-data/local-ipv4", "/latest/meta-data/public-keys/", "/latest/meta-data/placement/",
         "/latest/meta-data/placement/availability-zone", "/latest/meta-data/instance-type",
         "/latest/meta-data/local-hostname", "/latest/meta-data/ami-id", "/latest/meta-data/reservation-id",
         "/latest/meta-data/security-groups", "/latest/meta-data/block-device-mapping/", "/latest/user-data"]
latencies, failures = [], []
end = time.monotonic() + float(sys.argv[1])
crawls = 0
while time.monotonic() < end:
    started = time.monotonic()
    for path in paths:
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status not in (200, 404):
                failures.append(f"{path}: {status}")
        except OSError as exc:
            failures.append(f"{path}: {exc!r}")
        latencies.append((time.monotonic() - t0) * 1000)
    crawls += 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
latencies.sort()
print(json.dumps({"crawls": crawls, "n": len(latencies), "failures": failures[:10], "failed": len(failures),
                  "p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99)]}))
"""


WORKERS = 2
# With the caps off, each worker's descriptor limit is lowered to this (prlimit, as an operator's
# LimitNOFILE would), so the attacker can fill every worker's table within the attack.
FD_LIMIT = 4096


@pytest.fixture
def capped() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, metadata_workers=WORKERS)


@pytest.fixture
def uncapped() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, metadata_workers=WORKERS, metadata_connection_caps=False)


def worker_pids(stack: Stack) -> list[int]:
    status = wait_until(lambda: (s := metadata_status(stack.config.state_dir)) and len(s.get("workers", [])) == WORKERS
                        and s, "all workers")
    return [int(w["pid"]) for w in status["workers"]]


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


@dataclass
class Outcome:
    attack: dict[str, Any]
    crawl: dict[str, Any]
    idle: dict[str, Any]
    peak_fds: int


def attack_while_crawling(stack: Stack, fd_limit: int | None = None) -> Outcome:
    """The attacker (40 extra addresses, port security off) opens connections for 8 s while a
    guest on another network crawls once a second; also the crawl's idle figures, before."""
    bad_net, _ = stack.network("attacker", "10.75.0.0/24", gateway=False)
    good_net, _ = stack.network("victim", "10.76.0.0/24", gateway=False)
    attacker = stack.boot("attacker", bad_net["id"])
    victim = stack.boot("victim", good_net["id"])
    assert stack.fetch(victim, "/openstack/latest/meta_data.json")
    assert stack.fetch(attacker, "/openstack/latest/meta_data.json")
    pids = worker_pids(stack)
    if fd_limit is not None:
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
    # The attacker lies about its addresses: port security off for its port, so only the
    # metadata service's caps stand between it and everyone else.
    set_port_security(stack, attacker, False)
    wait_until(lambda: _reaches_metadata_from(stack, attacker, "10.75.0.250"), "port security off", timeout=60)
    extra = [f"10.75.0.{100 + i}" for i in range(EXTRA_ADDRESSES)]
    for address in extra:
        assert in_ns(attacker.namespace, "ip", "addr", "add", f"{address}/24", "dev", "eth0").returncode == 0
    idle = json.loads(in_ns(victim.namespace, sys.executable, "-c", CRAWL, str(CRAWL_SECONDS), timeout=60).stdout)

    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], *(open_fds(pid) for pid in pids))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    attack = subprocess.Popen(["ip", "netns", "exec", attacker.namespace, *ATTACKER_CPU, sys.executable, "-c",
                               ATTACK, "30", attacker.ip, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        # The attacker holds what it can get: with a descriptor limit to fill, until every
        # worker's table is full; with the caps, until it is refused (at once).
        time.sleep(1.5)
        if fd_limit is not None:
            wait_until(lambda: all(open_fds(pid) >= fd_limit - 8 for pid in pids), "every worker's table full",
                       timeout=15)
        crawl = in_ns(victim.namespace, sys.executable, "-c", CRAWL, str(CRAWL_SECONDS), timeout=60)
        out, _ = attack.communicate("", timeout=60)
    finally:
        stop.set()
        if attack.poll() is None:
            attack.kill()
            attack.wait()
        for stream in (attack.stdin, attack.stdout):  # also when the test failed above
            if stream is not None:
                stream.close()
        watcher.join()
    outcome = Outcome(json.loads(out), json.loads(crawl.stdout), idle, peak[0])
    print(outcome)
    return outcome


def test_a_guest_with_many_addresses_cannot_starve_another_network(capped: Stack) -> None:
    # Each worker raised its soft limit to the hard one it inherits from here.
    caps = Caps.from_open_files(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    seen = attack_while_crawling(capped)
    # The attacker was refused, and held no more than its caps.
    assert seen.attack["refused"] > 0, seen
    # Its own port and its extra addresses (one allowance together), each capped across workers.
    assert seen.attack["held"] <= 2 * (caps.per_port + WORKERS - 1), (seen, caps)
    # The victim's crawls never noticed: every request answered, within the 50 ms at p99 —
    # unless this machine is so busy that the same crawl without any attack already took half of
    # that (other tests on 2 shared cores): then within twice the idle p99, and it says so.
    assert seen.crawl["crawls"] >= 5 and seen.crawl["failed"] == 0, seen
    bound = P99_MS if seen.idle["p99"] <= P99_MS / 2 else 2 * seen.idle["p99"]
    if bound != P99_MS:
        print(f"busy machine: idle p99 {seen.idle['p99']:.1f} ms, so the bound is {bound:.1f} ms, not {P99_MS} ms")
    assert seen.crawl["p99"] < bound, seen
    # Each worker stayed inside its descriptor budget.
    assert 0 < seen.peak_fds < caps.total, (seen, caps)


def test_without_the_caps_the_same_guest_starves_another_network(uncapped: Stack) -> None:
    # The same attack with metadata_connection_caps = false: the attacker fills every
    # worker's descriptor table and the other network's guest is no longer answered.
    seen = attack_while_crawling(uncapped, fd_limit=FD_LIMIT)
    assert seen.idle["failed"] == 0, seen  # the victim was fine before the attack
    assert seen.attack["held"] > FD_LIMIT // 2, seen
    assert seen.peak_fds >= FD_LIMIT - 16, seen
    assert seen.crawl["failed"] > 0, seen
