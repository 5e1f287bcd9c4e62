"""A port deleted through the API has its DHCP lease released by the agent (Neutron's reload_allocations).

Without it dnsmasq keeps the address leased to the gone port's MAC until the
lease expires, and refuses it to the next port given that address (a guest
then boots without one). The guest's own dhclient is stopped first, without
a DHCPRELEASE — as a VM that died, or one deleted with its host — so only the
agent can release the lease.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from netmeta.drivers import files, processes
from tests.privileged.stack import Stack, make_stack, wait_until

pytestmark = pytest.mark.privileged


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def test_a_port_deleted_through_the_api_has_its_lease_released(stack: Stack) -> None:
    net, _ = stack.network("released", "10.96.1.0/24", gateway=False)
    guest = stack.boot("rel1", net["id"])
    kept = stack.boot("rel2", net["id"])
    leases = stack.config.paths.dhcp_file(net["id"], "leases")
    wait_until(lambda: guest.mac in (files.read_text(leases) or "") and kept.mac in (files.read_text(leases) or ""),
               "both leases in dnsmasq's file")
    pid = processes.read_pid_file(guest.paths.pid)
    assert pid is not None
    processes.stop_pid(pid, "dhclient", timeout=5.0)  # SIGTERM: dhclient sends no DHCPRELEASE
    assert guest.mac in (files.read_text(leases) or "")
    stack.client.request("DELETE", f"/v2.0/ports/{guest.port_id}")
    wait_until(lambda: guest.mac not in (files.read_text(leases) or ""), "the deleted port's lease to be released",
               timeout=20)
    assert f"{kept.mac} {kept.ip}" in (files.read_text(leases) or "")  # the other guest's lease is untouched
