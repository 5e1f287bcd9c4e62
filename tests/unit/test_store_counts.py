"""The store's counting reads the scheduler and the VNI allocator use (SQLite, no server)."""

from __future__ import annotations

from pathlib import Path

from netmeta.store.database import Database, Txn


def _db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path}/store.sqlite")


def test_lowest_free_vni_with_and_without_gaps(tmp_path: Path) -> None:
    db = _db(tmp_path)

    def write(fn):  # type: ignore[no-untyped-def]
        return db.write_sync(fn, "2026-12-02T00:00:00Z")[0]

    def claim(*vnis: int) -> None:
        write(lambda txn: [txn.claim_vni(v, f"net-{v}") for v in vnis])

    free = lambda lo, hi: write(lambda txn: txn.lowest_free_vni(lo, hi))  # noqa: E731
    assert free(100, 105) == 100
    claim(100, 101, 102)
    assert free(100, 105) == 103  # no gap: after the highest
    write(lambda txn: txn.release_vnis("net-101"))
    assert free(100, 105) == 101  # the gap first, as Neutron's allocator picks the lowest
    claim(101, 103, 104, 105)
    assert free(100, 105) is None  # the range is full
    assert free(106, 110) == 106
    claim(107)  # taken above a free low end
    assert free(106, 110) == 106
    claim(106, 109)
    assert free(106, 110) == 108
    claim(5000)  # outside the range (an admin's segmentation_id) does not count
    assert free(4990, 4999) == 4990 and free(4999, 5001) == 4999
    db.close()


def test_count_by_counts_only_rows_with_the_column_set(tmp_path: Path) -> None:
    db = _db(tmp_path)

    def add(txn: Txn) -> None:
        for i, (agent, net, router) in enumerate([("a", "n1", ""), ("a", "n2", ""), ("b", "n3", ""), ("b", "", "r1")]):
            txn.add("bindings", {"id": f"b{i}", "agent_id": agent, "network_id": net, "router_id": router,
                                 "host": "h"})

    db.write_sync(add, "2026-12-02T00:00:00Z")
    counts = db.write_sync(lambda txn: (txn.count_by("bindings", "agent_id", nonempty="network_id"),
                                        txn.count_by("bindings", "agent_id", nonempty="router_id")), "now")[0]
    assert counts == ({"a": 2, "b": 1}, {"b": 1})
    db.close()
