"""The agent's ledger: what it created, kept across restarts in ledger.json plus a journal of changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netmeta.agent import ledger as ledger_module
from netmeta.agent.ledger import Ledger
from netmeta.model.paths import StatePaths


def test_what_is_remembered_and_forgotten_survives_a_restart(tmp_path: Path) -> None:
    ledger = Ledger.load(str(tmp_path))
    ledger.remember(namespace="qdhcp-a", fabric_link="brqa")
    ledger.remember(namespace="qdhcp-b")
    ledger.remember(fabric_link="tapb")
    ledger.forget(namespace="qdhcp-a", fabric_link="brqa")
    again = Ledger.load(str(tmp_path))
    assert again.namespaces == {"qdhcp-b"} and again.fabric_links == {"tapb"}
    # A new object costs one appended line, not a rewrite of the ledger.
    paths = StatePaths(str(tmp_path))
    assert not os.path.exists(paths.ledger)
    assert Path(paths.ledger_journal).read_text().splitlines() == [
        "+n qdhcp-a", "+l brqa", "+n qdhcp-b", "+l tapb", "-n qdhcp-a", "-l brqa"]
    # Remembering what is already there writes nothing.
    again.remember(namespace="qdhcp-b")
    assert len(Path(paths.ledger_journal).read_text().splitlines()) == 6


def test_the_journal_is_folded_into_the_ledger_when_it_outgrows_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Only additions: never longer than the ledger itself. Churn: folded once past MIN_JOURNAL lines."""
    monkeypatch.setattr(ledger_module, "MIN_JOURNAL", 4)
    paths = StatePaths(str(tmp_path))
    ledger = Ledger.load(str(tmp_path))
    for i in range(10):
        ledger.remember(namespace=f"qdhcp-{i}")
    for i in range(10, 20):  # a network made and removed again, ten times
        ledger.remember(namespace=f"qdhcp-{i}")
        ledger.forget(namespace=f"qdhcp-{i}")
    journal = Path(paths.ledger_journal).read_text().splitlines()
    assert len(journal) <= len(ledger.namespaces) and os.path.exists(paths.ledger)
    assert Ledger.load(str(tmp_path)).namespaces == {f"qdhcp-{i}" for i in range(10)}


def test_a_torn_append_and_a_crash_between_save_and_truncate_lose_nothing(tmp_path: Path) -> None:
    paths = StatePaths(str(tmp_path))
    ledger = Ledger.load(str(tmp_path))
    ledger.remember(namespace="qdhcp-a")
    ledger.remember(namespace="qdhcp-b")
    ledger.forget(namespace="qdhcp-a")
    # Killed while appending: half a line, no newline. That object was never created.
    with open(paths.ledger_journal, "a") as handle:
        handle.write("+n qdhc")
    assert Ledger.load(str(tmp_path)).namespaces == {"qdhcp-b"}
    # Killed after ledger.json was written but before the journal was emptied: replaying it changes nothing.
    Path(paths.ledger).write_text(json.dumps({"namespaces": ["qdhcp-b"], "fabric_links": []}))
    assert Ledger.load(str(tmp_path)).namespaces == {"qdhcp-b"}
    # Garbage lines are skipped; `down` clears everything with save().
    with open(paths.ledger_journal, "a") as handle:
        handle.write("\nnonsense\n+x y\n+l brqc\n")
    loaded = Ledger.load(str(tmp_path))
    assert loaded.fabric_links == {"brqc"}
    loaded.namespaces.clear()
    loaded.fabric_links.clear()
    loaded.save()
    assert Path(paths.ledger_journal).read_text() == ""
    empty = Ledger.load(str(tmp_path))
    assert not empty.namespaces and not empty.fabric_links
