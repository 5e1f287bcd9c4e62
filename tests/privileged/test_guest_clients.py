"""Real metadata clients, run from guests that hold a real DHCP lease.

The loopback functional tests prove the metadata app speaks the protocols;
these prove a guest can *reach* it the way a cloud image does: dhclient takes
a lease from dnsmasq, installs the classless static route to 169.254.169.254
that netmeta handed out, and cloud-init's or botocore's own code — run inside
the guest namespace by ``guest_client.py`` — follows that route to the
listener in the qdhcp namespace (isolated network) or in the qrouter
namespace behind the REDIRECT rule (routed network). Nothing is pointed at
127.0.0.1, and nothing ever asks 169.254.169.254 from the root namespace.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from netmeta.config import RateLimitConfig
from netmeta.metadata.service import read_status as metadata_status
from netmeta.model import names
from netmeta.vm.guests import Guest
from tests.cloudinit import cloudinit_dist_packages
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

pytestmark = pytest.mark.privileged

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "guest_client.py")

# Bytes that are not UTF-8, so "user data round-trips" means byte-for-byte.
USER_DATA = b"#cloud-config\nruncmd: [echo hi]\n# \xff\xfe raw bytes\n"
KEY_NAME = "guestkey"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestClientTestKeyOnlyForNetmeta guest@netmeta"


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def cloudinit_path() -> Iterator[str]:
    """cloud-init 22.4.2's Python tree (see tests/cloudinit.py); the guest client puts it on its sys.path."""
    with cloudinit_dist_packages() as path:
        yield path


@pytest.fixture
def isolated_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


@pytest.fixture
def routed_stack() -> Iterator[Stack]:
    # Neutron's default: no metadata in qdhcp, so a routed guest can only use the router.
    yield from make_stack(enable_isolated_metadata=False)


@pytest.fixture
def required_tokens_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, imds_tokens="required")


@pytest.fixture
def tokens_off_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, imds_tokens="off")


RATE_LIMIT = 5


@pytest.fixture
def rate_limited_stack() -> Iterator[Stack]:
    # Windows far longer than the test, so the count decides, not the clock.
    limits = RateLimitConfig(
        rate_limit_enabled=True,
        base_window_duration=300, base_query_rate_limit=RATE_LIMIT,
        burst_window_duration=300, burst_query_rate_limit=RATE_LIMIT,
    )
    yield from make_stack(enable_isolated_metadata=True, rate_limiting=limits)


# --- helpers -------------------------------------------------------------------


def run_client(guest: Guest, mode: str, cloudinit: str = "", timeout: float = 60.0) -> dict[str, Any]:
    """Run ``guest_client.py MODE`` inside the guest's namespace and parse its JSON."""
    argv = [sys.executable, CLIENT, mode]
    if cloudinit:
        argv += ["--cloudinit", cloudinit]
    out = in_ns(guest.namespace, *argv, timeout=timeout)
    assert out.returncode == 0, f"guest client {mode} failed in {guest.namespace}:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def status_of(stack: Stack, guest: Guest, path: str, *extra: str) -> int | None:
    """The status of one GET from the guest, or None while nothing answers yet."""
    out = stack.curl(guest, path, "-o", "/dev/null", "-w", "%{http_code}", *extra)
    return int(out.stdout) if out.returncode == 0 and out.stdout.isdigit() else None


def http(stack: Stack, guest: Guest, path: str, *extra: str) -> tuple[int, dict[str, str], str]:
    """One curl from inside the guest: (status, headers lower-cased, body)."""
    out = stack.curl(guest, path, "-i", *extra)
    assert out.returncode == 0, f"curl {path} from {guest.name}: rc {out.returncode} {out.stderr}"
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def boot_with_everything(stack: Stack, name: str, net_id: str) -> Guest:
    return stack.boot(
        name, net_id, user_data=USER_DATA, key_name=KEY_NAME, public_key=PUBLIC_KEY, meta={"role": "client-test"}
    )


def assert_cloud_init_sees_the_guest(stack: Stack, guest: Guest, cloudinit: str) -> None:
    """Both of cloud-init's readers, from the guest, return this guest's data."""
    # Wait for the listener to answer at all (it follows the agent), then read for real.
    stack.fetch(guest, "/openstack")
    got = run_client(guest, "openstack", cloudinit)["openstack"]
    md = got["metadata"]
    assert md["uuid"] == guest.instance_id and md["instance-id"] == guest.instance_id
    assert md["name"] == guest.name
    assert md["hostname"] == f"{guest.name}.novalocal" == md["local-hostname"]
    assert md["meta"] == {"role": "client-test"}
    assert md["public_keys"] == {KEY_NAME: PUBLIC_KEY}
    assert md["keys"] == [{"name": KEY_NAME, "type": "ssh", "data": PUBLIC_KEY}]
    assert got["random_seed_len"] == 512
    assert base64.b64decode(got["userdata_b64"]) == USER_DATA
    net = got["networkdata"]
    assert [link["ethernet_mac_address"] for link in net["links"]] == [guest.mac]
    assert [(n["type"], n["network_id"], n["link"]) for n in net["networks"]] == [
        ("ipv4_dhcp", guest.network_id, net["links"][0]["id"])
    ]
    # read_v2's own EC2 crawl (cloud-init hard-codes 169.254.169.254 for it).
    ec2_in_v2 = got["ec2_metadata"]
    assert ec2_in_v2["instance-id"].startswith("i-") and ec2_in_v2["local-ipv4"] == guest.ip

    ec2 = run_client(guest, "ec2", cloudinit)["ec2"]
    emd = ec2["metadata"]
    assert emd["instance-id"] == ec2_in_v2["instance-id"]
    assert emd["instance-id"] == "i-" + guest.instance_id.split("-")[0][:8]
    assert emd["local-ipv4"] == guest.ip
    assert emd["public-keys"] == {KEY_NAME: PUBLIC_KEY}
    assert base64.b64decode(ec2["userdata_b64"]) == USER_DATA
    # The raw EC2 key path cloud-init's crawler turned into {name: key}.
    assert stack.fetch(guest, "/2009-04-04/meta-data/public-keys/").strip() == f"0={KEY_NAME}"
    assert stack.fetch(guest, "/2009-04-04/meta-data/public-keys/0/openssh-key").strip() == PUBLIC_KEY


def answered_by(stack: Stack, guest: Guest) -> set[str]:
    """Which listener kinds the metadata process has answered this guest on."""
    status = metadata_status(stack.config.state_dir) or {}
    return {a["kind"] for a in status.get("access", []) if a["peer"] == guest.ip}  # type: ignore[union-attr]


# --- cloud-init over both paths -------------------------------------------------------


def test_cloud_init_readers_through_qdhcp(isolated_stack: Stack, cloudinit_path: str) -> None:
    stack = isolated_stack
    net, _ = stack.network("gc-isolated", "192.168.121.0/24", gateway=False)
    dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
    guest = boot_with_everything(stack, "gc-iso", net["id"])
    routes = {r["dst"]: r.get("gateway") for r in stack.routes(guest)}
    assert routes.get("169.254.169.254") == dhcp_ip and "default" not in routes

    assert_cloud_init_sees_the_guest(stack, guest, cloudinit_path)
    wait_until(lambda: answered_by(stack, guest), "the metadata status to list the guest")
    assert answered_by(stack, guest) <= {"network"}, answered_by(stack, guest)


def test_cloud_init_readers_through_the_router(routed_stack: Stack, cloudinit_path: str) -> None:
    stack = routed_stack
    net, sub = stack.network("gc-routed", "172.30.40.0/24")
    router = stack.router("gc-router", sub)
    guest = boot_with_everything(stack, "gc-rtr", net["id"])
    routes = {r["dst"]: r.get("gateway") for r in stack.routes(guest)}
    assert routes.get("169.254.169.254") == sub["gateway_ip"] == routes.get("default")
    # Nothing listens in qdhcp (enable_isolated_metadata is off): only the router can answer.
    assert "169.254.169.254:80" not in in_ns(names.dhcp_namespace(net["id"]), "ss", "-Hntl").stdout

    assert_cloud_init_sees_the_guest(stack, guest, cloudinit_path)
    qrouter = names.router_namespace(router["id"])
    assert f":{stack.config.metadata_port}" in in_ns(qrouter, "ss", "-Hntl").stdout
    wait_until(lambda: answered_by(stack, guest), "the metadata status to list the guest")
    assert answered_by(stack, guest) == {"router"}, answered_by(stack, guest)


# --- the IMDSv2 hop limit, measured at the guest ----------------------------------------


def _ttl_counts(ns: str) -> dict[int, int]:
    """Packets from 169.254.169.254:80 seen by the guest's NMTTL chain, per IP TTL."""
    out = in_ns(ns, "iptables", "-w", "-n", "-v", "-x", "-L", "NMTTL").stdout
    counts: dict[int, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and "TTL" in line:
            counts[int(line.rsplit("==", 1)[1].split()[0])] = int(parts[0])
    return counts


TOKEN_PUT = ("-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60")


def test_token_hop_limit_reaches_the_guest_but_not_a_relay_behind_it(routed_stack: Stack) -> None:
    """The router listener is one L2 hop from the guest: TTL 1 arrives; one hop more does not.

    The guest's own iptables (in its namespace, made by this test) count
    answers by IP TTL. Then a "container" namespace behind the guest, NATed
    by it, asks too: plain GETs cross the extra hop, the token does not —
    including TCP's retransmissions of it.
    """
    stack = routed_stack
    net, sub = stack.network("gc-ttl", "172.30.41.0/24")
    stack.router("gc-ttl-router", sub)
    guest = stack.boot("gc-ttl", net["id"])
    stack.fetch(guest, "/latest/meta-data/instance-id")
    ns = guest.namespace
    for argv in (
        ("-N", "NMTTL"),
        ("-A", "NMTTL", "-m", "ttl", "--ttl-eq", "1"),
        ("-A", "NMTTL", "-m", "ttl", "--ttl-eq", "64"),
        ("-I", "INPUT", "-s", "169.254.169.254", "-p", "tcp", "--sport", "80", "-j", "NMTTL"),
    ):
        assert in_ns(ns, "iptables", "-w", *argv).returncode == 0, argv

    status, _, _ = http(stack, guest, "/latest/meta-data/instance-id")
    assert status == 200
    after_get = _ttl_counts(ns)
    assert after_get.get(1, 0) == 0 and after_get.get(64, 0) > 0

    status, _, token = http(stack, guest, "/latest/api/token", *TOKEN_PUT)
    assert status == 200 and token
    assert _ttl_counts(ns).get(1, 0) > 0, "the token answer should arrive with IP TTL 1"

    # A relay behind the guest: one more routed hop.
    relay = f"nmr{guest.instance_id[:8]}-relay"  # unique, and ours alone
    assert not os.path.exists(f"/run/netns/{relay}")
    try:
        subprocess.run(["ip", "netns", "add", relay], check=True)
        plumbing: list[tuple[str, tuple[str, ...]]] = [
            (ns, ("ip", "link", "add", "rl0", "type", "veth", "peer", "name", "rl1")),
            (ns, ("ip", "link", "set", "rl1", "netns", relay)),
            (ns, ("ip", "addr", "add", "10.254.9.1/30", "dev", "rl0")),
            (ns, ("ip", "link", "set", "rl0", "up")),
            (ns, ("sysctl", "-qw", "net.ipv4.ip_forward=1")),
            (ns, ("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.254.9.0/30", "-o", "eth0", "-j", "MASQUERADE")),
            (relay, ("ip", "addr", "add", "10.254.9.2/30", "dev", "rl1")),
            (relay, ("ip", "link", "set", "rl1", "up")),
            (relay, ("ip", "route", "add", "default", "via", "10.254.9.1")),
        ]
        for target, step in plumbing:
            done = in_ns(target, *step)
            assert done.returncode == 0, (step, done.stderr)
        via_relay = in_ns(relay, "curl", "-s", "-m", "3", "http://169.254.169.254/latest/meta-data/instance-id")
        assert via_relay.returncode == 0 and via_relay.stdout.startswith("i-"), via_relay
        # Long enough for several retransmissions (RTO starts at 200 ms here).
        put = in_ns(relay, "curl", "-s", "-m", "3", *TOKEN_PUT, "http://169.254.169.254/latest/api/token")
        assert put.returncode == 28 and put.stdout == "", f"token crossed a hop: rc {put.returncode} {put.stdout!r}"
    finally:
        subprocess.run(["ip", "netns", "del", relay], capture_output=True)
    assert not os.path.exists(f"/run/netns/{relay}")


# --- botocore ------------------------------------------------------------------------


def test_botocore_uses_a_token_when_tokens_are_required(required_tokens_stack: Stack) -> None:
    stack = required_tokens_stack
    net, _ = stack.network("gc-req", "10.66.1.0/24", gateway=False)
    guest = stack.boot("gc-req", net["id"])
    wait_until(lambda: status_of(stack, guest, "/latest/meta-data/instance-id") == 401, "the listener to refuse a tokenless GET")
    status, _, token = http(stack, guest, "/latest/api/token", *TOKEN_PUT)
    assert status == 200
    assert http(stack, guest, "/latest/meta-data/instance-id", "-H", f"X-aws-ec2-metadata-token: {token}")[0] == 200

    got = run_client(guest, "botocore")["botocore"]
    assert got == {"token": True, "region": "nov"}, got


def test_botocore_falls_back_to_plain_gets_when_tokens_are_off(tokens_off_stack: Stack) -> None:
    stack = tokens_off_stack
    net, _ = stack.network("gc-off", "10.66.2.0/24", gateway=False)
    guest = stack.boot("gc-off", net["id"])
    stack.fetch(guest, "/latest/meta-data/instance-id")
    assert http(stack, guest, "/latest/api/token", *TOKEN_PUT)[0] == 404

    got = run_client(guest, "botocore")["botocore"]
    assert got == {"token": False, "region": "nov"}, got


# --- password ------------------------------------------------------------------------


def test_guest_sets_its_password_once_and_the_owner_reads_it(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("gc-pw", "10.66.3.0/24", gateway=False)
    guest = stack.boot("gc-pw", net["id"])
    path = "/openstack/latest/password"
    stack.fetch(guest, "/latest/meta-data/instance-id")
    status, _, body = http(stack, guest, path)
    assert (status, body) == (200, "")
    owner = f"/netmeta/v1/instances/{guest.instance_id}/password"
    assert stack.client.get(owner) == {"password": ""}

    secret = "c2VjcmV0IGVuY3J5cHRlZCBwYXNzd29yZA=="
    assert http(stack, guest, path, "-X", "POST", "--data-binary", secret)[0] == 200
    status, _, body = http(stack, guest, path, "-X", "POST", "--data-binary", "another")
    assert status == 409, body
    assert stack.client.get(owner) == {"password": secret}
    assert http(stack, guest, path)[2] == secret


# --- rate limiting ---------------------------------------------------------------------


def test_a_noisy_guest_is_limited_and_its_neighbour_is_not(rate_limited_stack: Stack) -> None:
    stack = rate_limited_stack
    net, _ = stack.network("gc-rl", "10.66.4.0/24", gateway=False)
    noisy = stack.boot("gc-noisy", net["id"])
    quiet = stack.boot("gc-quiet", net["id"])
    stack.fetch(noisy, "/latest/meta-data/instance-id")

    url = "http://169.254.169.254/latest/meta-data/instance-id"
    # One curl, one connection, RATE_LIMIT + 3 requests; each URL needs its own -o.
    burst = in_ns(noisy.namespace, "curl", "-s", "-m", "5", "-w", "%{http_code}\n",
                  *["-o", "/dev/null"] * (RATE_LIMIT + 3), *[url] * (RATE_LIMIT + 3))
    codes = burst.stdout.split()
    assert len(codes) == RATE_LIMIT + 3, burst
    first_refusal = codes.index("429")
    assert set(codes[:first_refusal]) == {"200"} and set(codes[first_refusal:]) == {"429"}, codes
    assert first_refusal <= RATE_LIMIT
    status, headers, _ = http(stack, noisy, "/latest/meta-data/instance-id")
    assert status == 429 and int(headers["retry-after"]) > 0, headers

    status, _, body = http(stack, quiet, "/latest/meta-data/instance-id")
    assert status == 200 and body.startswith("i-")
