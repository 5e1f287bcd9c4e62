"""Connection counts shared by workers (model.metadata.conncount): one cap for a guest, whatever worker."""

from __future__ import annotations

from netmeta.model.metadata.conncount import PROBE, SharedCounts, table_size


def workers(n: int, slots: int = 64) -> list[SharedCounts]:
    table = bytearray(table_size(n, slots))
    return [SharedCounts(table, workers=n, worker=i, slots=slots) for i in range(n)]


def test_a_key_counts_what_every_worker_holds() -> None:
    a, b = workers(2)
    for _ in range(3):
        a.add(("port", "p1"), 1)
    b.add(("port", "p1"), 1)
    b.add(("port", "p2"), 1)
    assert a.total(("port", "p1")) == b.total(("port", "p1")) == 4
    assert a.total(("port", "p2")) == 1 and a.total(("port", "p3")) == 0
    a.add(("port", "p1"), -1)
    b.add(("port", "p1"), -1)
    assert b.total(("port", "p1")) == 2


def test_one_worker_counts_in_memory_alone() -> None:
    (only,) = workers(1)
    only.add("k", 1)
    only.add("k", 1)
    assert only.total("k") == 2
    only.add("k", -1)
    only.add("k", -1)
    assert only.total("k") == 0 and not only.mine and not only.cells


def test_keys_that_share_rows_are_never_mixed_up_and_overflow_stays_counted() -> None:
    # As many rows as a probe: every key collides; the first PROBE keys get cells, the rest overflow.
    a, b = workers(2, slots=PROBE)
    keys = [("port", str(i)) for i in range(PROBE + 3)]
    for key in keys:
        a.add(key, 1)
        a.add(key, 1)
        b.add(key, 1)
    assert len(a.overflow) == 3 and len(b.overflow) == 3
    for key in keys[:PROBE]:
        assert a.total(key) == 3 and b.total(key) == 3
    for key in keys[PROBE:]:  # seen by its own worker only, never someone else's count
        assert a.total(key) == 2 and b.total(key) == 1
    # A closed key frees its cell for another.
    a.add(keys[0], -1)
    a.add(keys[0], -1)
    a.add(keys[-1], 1)  # an overflowed key takes a freed cell with its whole count
    assert a.total(keys[0]) == 1 and b.total(keys[-1]) == 1 + 3 and a.total(keys[-1]) == 3


def test_a_worker_forked_into_a_dead_ones_slot_forgets_its_connections() -> None:
    table = bytearray(table_size(2, 64))
    a = SharedCounts(table, workers=2, worker=0, slots=64)
    dead = SharedCounts(table, workers=2, worker=1, slots=64)
    for _ in range(5):
        dead.add(("port", "p"), 1)
    a.add(("port", "p"), 1)
    assert a.total(("port", "p")) == 6
    SharedCounts(table, workers=2, worker=1, slots=64).clear()  # its replacement
    assert a.total(("port", "p")) == 1


def test_a_closed_key_keeps_its_cell_until_another_key_takes_it() -> None:
    a, b = workers(2, slots=PROBE)
    keys = [("port", str(i)) for i in range(PROBE)]
    for key in keys:  # every cell of a's column taken
        a.add(key, 1)
    a.add(keys[0], -1)  # closed: its cell still holds its tag, count 0
    assert a.cells[keys[0]] is not None and b.total(keys[0]) == 0
    a.add(keys[0], 1)  # opened again: the same cell, no probe
    assert b.total(keys[0]) == 1
    a.add(keys[0], -1)
    newcomer = ("port", "new")
    a.add(newcomer, 1)  # takes the only free cell: keys[0]'s
    assert keys[0] not in a.cells and b.total(newcomer) == 1
    a.add(keys[0], 1)  # no free cell left: counted by a alone, never as the newcomer
    assert keys[0] in a.overflow and a.total(keys[0]) == 1 and b.total(keys[0]) == 0
    assert b.total(newcomer) == 1


def test_totals_equal_the_sum_over_workers_for_many_keys_and_three_workers() -> None:
    # 64 rows: most keys' probe windows are read in one piece, those near the end wrap around.
    import random

    rng = random.Random(3)
    counts = workers(3, slots=64)
    truth: dict[tuple[str, str], list[int]] = {}
    keys = [("port", str(i)) for i in range(40)]
    for _ in range(3000):
        key, worker = rng.choice(keys), rng.randrange(3)
        held = truth.setdefault(key, [0, 0, 0])
        delta = 1 if held[worker] == 0 or rng.random() < 0.6 else -1
        counts[worker].add(key, delta)
        held[worker] += delta
        # Every key, not only this one: a move of this key's cell must not fool what
        # another worker remembers of where the others' cells are (SharedCounts.total).
        for other_key, other_held in truth.items():
            if any(other_key in c.overflow for c in counts):
                continue
            assert all(c.total(other_key) == sum(other_held) for c in counts), other_key
