"""A ``/run/netns/qdhcp-*`` file nobody mounted: what an agent killed mid-create leaves behind.

pyroute2 (and ``ip netns add``) create the empty file, then bind-mount the
new namespace onto it; an agent killed in between leaves a mode-000 file with
no namespace behind it. The agent recorded the name in its ledger first, so
its next full pass removes the file when nothing wants the namespace any more,
and ``netmeta down`` removes it too (it used to skip a name that was no mounted
namespace, then forget it). A stale file the agent never recorded — another
owner's, perhaps mid-create — is left alone.
"""

from __future__ import annotations

import os

import pytest

from netmeta.agent.ledger import Ledger
from netmeta.agent.reconciler import Reconciler
from netmeta.cli.commands import teardown
from netmeta.config import Config
from netmeta.drivers import netns
from netmeta.model.types import Snapshot
from tests.privileged.conftest import NamespaceScope

pytestmark = pytest.mark.privileged


def _stale(name: str) -> str:
    path = netns.namespace_path(name)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o000))  # as pyroute2 leaves it
    assert not netns.namespace_exists(name)
    return path


def test_the_agent_and_down_remove_the_stale_files_they_recorded_only(netns_scope: NamespaceScope) -> None:
    state_dir = os.path.dirname(netns_scope.path("state", "ledger"))
    config = Config(state_dir=state_dir, fabric_namespace=netns_scope.name("fabric"))
    mine, other, later = (f"qdhcp-{netns_scope.prefix}{what}" for what in ("mine", "other", "later"))
    paths = []
    try:
        paths = [_stale(mine), _stale(other)]
        Ledger.load(config.state_dir).remember(namespace=mine)  # written down before the create, as the agent does
        reconciler = Reconciler(config)
        try:
            report = reconciler.converge(Snapshot(), full=True)  # the network is gone: nothing wants it
        finally:
            reconciler.close()
        assert report.failed == {}
        assert not os.path.lexists(paths[0]), "the agent's own stale file survived its full pass"
        assert os.path.lexists(paths[1]), "a stale file the agent never recorded was removed"
        assert mine not in Ledger.load(config.state_dir).namespaces

        paths.append(_stale(later))
        Ledger.load(config.state_dir).remember(namespace=later)
        done = teardown(config)
        assert not done.problems, done.problems
        assert not os.path.lexists(paths[2]), "netmeta down left the stale file it had recorded"
        assert os.path.lexists(paths[1])
    finally:
        for path in paths:
            if os.path.lexists(path) and not netns.namespace_exists(os.path.basename(path)):
                os.unlink(path)
