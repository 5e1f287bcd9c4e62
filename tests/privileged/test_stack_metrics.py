"""Each component's /metrics after a known sequence on a real stack, parsed by prometheus_client.

The metadata process counts in multiprocess mode (files under its state
directory, summed at scrape time), exactly as it runs in production.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Iterator

import pytest

from netmeta.cli.commands import component_status
from tests.functional.test_metrics import Samples, parse, value
from tests.privileged.stack import Stack, make_stack, wait_until

pytestmark = pytest.mark.privileged


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def address(stack: Stack, component: str) -> str:
    status = wait_until(lambda: component_status(stack.config, component), f"the {component} status")
    return str(status["metrics"])


def scrape(stack: Stack, component: str) -> Samples:
    with urllib.request.urlopen(f"http://{address(stack, component)}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def health(stack: Stack, component: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{address(stack, component)}/healthz", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_agent_and_metadata_metrics_count_what_happened(stack: Stack) -> None:
    net1, _ = stack.network("mx1", "10.98.1.0/24", gateway=False)
    net2, _ = stack.network("mx2", "10.98.2.0/24", gateway=False)
    guest = stack.boot("mx-vm", net1["id"])
    stack.converged()
    stack.fetch(guest, "/openstack/latest/meta_data.json")  # waits until the listener answers
    for _ in range(2):
        assert stack.curl(guest, "/openstack/latest/meta_data.json", "-f").returncode == 0
    assert "404" in stack.curl(guest, "/openstack/latest/no-such-file", "-w", "%{http_code}").stdout
    token = stack.curl(guest, "/latest/api/token", "-X", "PUT",
                       "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60").stdout
    assert token

    total = "netmeta_metadata_requests_total"
    # Requests reach the metrics on each worker's next tick (0.5 s), not at once, and the
    # requests were spread over the workers: wait until every count has arrived, then
    # check that none is counted more than once.
    want = {("openstack", "200"): 3, ("openstack", "404"): 1, ("token", "200"): 1}

    def counted(samples: Samples) -> dict[tuple[str, str], float]:
        return {key: value(samples, total, listener="network", family=key[0], status=key[1]) for key in want}

    meta = wait_until(lambda: (m := scrape(stack, "metadata")) and all(
        got >= want[key] for key, got in counted(m).items()) and m, "the requests in the metrics")
    time.sleep(1.5)  # three more ticks: nothing may be added twice
    meta = scrape(stack, "metadata")
    assert counted(meta) == want
    assert value(meta, "netmeta_metadata_tokens_issued_total") == 1
    # One listener per network in every worker, summed; a worker may still be opening its own.
    wait_until(lambda: value(scrape(stack, "metadata"), "netmeta_metadata_listeners", kind="network") >= 2,
               "every worker's listener in the metrics")
    assert health(stack, "metadata")["status"] == "ok"

    agent = scrape(stack, "agent")
    revision = stack.client.state()["revision"]
    assert value(agent, "netmeta_agent_dnsmasq_starts_total") == 2
    assert value(agent, "netmeta_agent_revision_applied") == revision
    assert value(agent, "netmeta_agent_revision_lag") == 0
    assert value(agent, "netmeta_agent_dnsmasq_respawns_total") == 0
    passes = sum(v for (name, _), v in agent.items() if name == "netmeta_agent_passes_total")
    assert passes >= 1
    assert value(agent, "netmeta_agent_objects_changed_total", action="spawned") == 2

    # a dnsmasq killed behind the agent's back is a respawn, and a start
    pid = stack.dnsmasq_pid(net2["id"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (p := stack.dnsmasq_pid(net2["id"])) and p != pid, "dnsmasq to be started again")
    # counted when the repair's unit finishes, a moment after dnsmasq's pid file appears
    agent = wait_until(lambda: (a := scrape(stack, "agent")) and
                       value(a, "netmeta_agent_dnsmasq_starts_total") == 3 and a, "the restart to be counted")
    assert value(agent, "netmeta_agent_dnsmasq_respawns_total") == 1
    assert health(stack, "agent")["status"] == "ok"

    server = scrape(stack, "server")
    assert value(server, "netmeta_api_requests_total", method="POST", route="/v2.0/networks", status="201") == 2
    assert value(server, "netmeta_api_revision") == revision
    assert value(server, "netmeta_api_watch_clients") >= 1  # the agent's and the metadata process's long-polls
