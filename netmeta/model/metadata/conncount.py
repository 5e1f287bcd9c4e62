"""Open connections per key (a guest's port, a listener), counted by every worker in one table.

The metadata service's connection caps must hold across its worker
processes: with a count per worker, a guest could hold ``workers ×
per_port`` connections. The counts live in one fixed table that every
worker maps (a shared anonymous mmap made before the fork), laid out like
:mod:`netmeta.model.metadata.ratelimit`'s:

* ``slots`` rows × ``workers`` columns of (tag, count) cells; each worker
  writes only its own column, so no two processes ever write the same bytes
  and no lock is needed; a key's total is the sum over the columns;
* a key hashes to a row and takes, in its worker's column, the first cell of
  the next ``PROBE`` rows that holds its tag or holds no connection (count
  0); readers sum every cell with the key's tag in those rows. Unlike a rate
  counter, a connection count must never be lost to a collision, so a key
  whose rows are all taken in this worker's column is counted here only
  (:attr:`SharedCounts.overflow`) — that worker still holds it to the cap;
* the total is read while other workers may be admitting at the same
  instant, so a key may exceed its cap by at most ``workers - 1``
  connections — the price of no lock;
* a worker that dies leaves its column behind; the worker forked into its
  slot clears the column (:meth:`SharedCounts.clear`) before it accepts
  anything, because the dead worker's connections died with it.

Pure: the table (a ``bytearray``, or a shared mmap made by the caller) is injected.
"""

from __future__ import annotations

import collections
import struct
from typing import Hashable, Union

from netmeta.model.metadata.ratelimit import key_tag

_CELL = struct.Struct("<QQ")  # tag (odd, never 0), count
_COUNT = struct.Struct("<Q")  # a cell's count alone, 8 bytes in
SLOTS = 16384
PROBE = 8

Table = Union[bytearray, memoryview]


def table_size(workers: int, slots: int = SLOTS) -> int:
    """Bytes of a table for ``workers`` processes."""
    return slots * workers * _CELL.size


class SharedCounts:
    """This worker's counts, written to its column; totals summed over every worker's."""

    def __init__(self, table: Table | None = None, *, workers: int = 1, worker: int = 0,
                 slots: int = SLOTS) -> None:
        self.workers, self.worker, self.slots = workers, worker, slots
        self.table: Table = table if table is not None else bytearray(table_size(workers, slots))
        if len(self.table) < table_size(workers, slots):
            raise ValueError("connection table too small for its workers")
        self.mine: collections.Counter[Hashable] = collections.Counter()  # this worker's, exact
        # key -> its cell's offset in this worker's column, kept while the
        # count is 0 (the next connection of the key needs no probe) until
        # another key takes the cell: holder says whose it is
        self.cells: dict[Hashable, int] = {}
        self.holder: dict[int, Hashable] = {}
        self.overflow: set[Hashable] = set()  # keys with no free cell: counted here only
        # A key's PROBE rows, all columns, as one struct; where the other workers' tags are in it
        self._window = struct.Struct("<" + "QQ" * PROBE * workers)
        self._others = tuple(2 * (probe * workers + column) for probe in range(PROBE) for column in range(workers)
                             if column != worker)
        # key -> its tag and where every other worker's cell of it was last found (see total)
        self._found: dict[Hashable, tuple[int, ...]] = {}

    def _offset(self, row: int, column: int) -> int:
        return ((row % self.slots) * self.workers + column) * _CELL.size

    def clear(self) -> None:
        """Forget this worker's column (a worker forked into a dead one's slot calls this first)."""
        for row in range(self.slots):
            _CELL.pack_into(self.table, self._offset(row, self.worker), 0, 0)
        self.mine.clear()
        self.cells.clear()
        self.holder.clear()
        self.overflow.clear()

    def total(self, key: Hashable) -> int:
        """Connections ``key`` holds in every worker.

        A column holds at most one cell with a key's tag (:meth:`_claim`
        takes the tagged cell first), so once every other worker's cell of
        the key has been found, reading those cells — each still carrying
        the tag — is the whole count; a cell that lost the tag sends the
        read back to the key's rows.
        """
        mine = self.mine.get(key, 0)
        if self.workers == 1:
            return mine
        table = self.table
        found = self._found.get(key)
        if found is not None:
            tag, count = found[0], mine
            for offset in found[1:]:
                cell_tag, other = _CELL.unpack_from(table, offset)
                if cell_tag != tag:
                    break
                count += other
            else:
                return count
        tag = key_tag(key)
        row = (tag >> 1) % self.slots
        count = mine
        if row + PROBE <= self.slots:  # the key's rows in one read, every worker's cells
            start = self._offset(row, 0)
            cells = self._window.unpack_from(table, start)
            if tag in cells:
                where = [tag]
                for index in self._others:
                    if cells[index] == tag:
                        count += cells[index + 1]
                        where.append(start + index * 8)
                if len(where) == self.workers:  # every other worker has its cell: read only those next time
                    if len(self._found) > 4096:
                        self._found.clear()
                    self._found[key] = tuple(where)
            return count
        for probe in range(PROBE):  # the rows wrap around the end of the table
            for column in range(self.workers):
                if column == self.worker:
                    continue
                other_tag, other = _CELL.unpack_from(table, self._offset(row + probe, column))
                if other_tag == tag:
                    count += other
        return count

    def add(self, key: Hashable, delta: int) -> None:
        """This worker opened (+1) or closed (-1) a connection of ``key``."""
        count = self.mine.get(key, 0) + delta  # not mine[key]: a key at 0 is absent, and Counter's __missing__ is a call
        if count <= 0:
            count = 0
            self.mine.pop(key, None)
        else:
            self.mine[key] = count
        if self.workers == 1:
            return  # nobody else reads the table
        offset = self.cells.get(key)
        if offset is None:
            if count == 0:
                self.overflow.discard(key)
                return
            # new, or overflowed before: a cell may be free now
            offset = self._claim(key)
            if offset is None:
                self.overflow.add(key)
                return
            self.overflow.discard(key)
        _COUNT.pack_into(self.table, offset + 8, count)

    def _claim(self, key: Hashable) -> int | None:
        """A cell for ``key`` in this worker's column (its tag written, count 0), or None when all are taken."""
        tag = key_tag(key)
        row = (tag >> 1) % self.slots
        free = None
        for probe in range(PROBE):
            offset = self._offset(row + probe, self.worker)
            cell_tag, count = _CELL.unpack_from(self.table, offset)
            if cell_tag == tag:
                free = offset
                break
            if count == 0 and free is None:
                free = offset
        if free is None:
            return None
        previous = self.holder.get(free)
        if previous is not None and previous != key:
            del self.cells[previous]  # its count was 0: it probes again when it next opens
        self.cells[key], self.holder[free] = free, key
        _CELL.pack_into(self.table, free, tag, 0)
        return free
