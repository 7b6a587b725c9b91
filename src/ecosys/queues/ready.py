"""The entries a queued endpoint's worker has yet to run, lowest sequence number first."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from .store import Entry


class ReadyEntries:
    """A priority queue of entries by ``seq``, cheap for entries that come in order.

    Stored requests become ready in the order they were stored, so they go on
    a deque; only the others (retries, reprocessed entries) pay for a heap.
    ``pop`` takes the lower of the two heads.
    """

    __slots__ = ("_in_order", "_heap", "_pushes")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._in_order: deque[Entry] = deque()
        # (seq, push number, entry): the push number settles equal seqs without comparing entries.
        self._heap: list[tuple[int, int, Entry]] = []
        self._pushes = itertools.count()
        for entry in sorted(entries, key=lambda e: e.seq):
            self.push(entry)

    def push(self, entry: Entry) -> None:
        """Add *entry*."""
        in_order = self._in_order
        if not in_order or in_order[-1].seq < entry.seq:
            in_order.append(entry)
        else:
            heapq.heappush(self._heap, (entry.seq, next(self._pushes), entry))

    def pop(self) -> Entry:
        """Remove and return the entry with the lowest ``seq`` (IndexError if empty)."""
        heap, in_order = self._heap, self._in_order
        if heap and (not in_order or heap[0][0] < in_order[0].seq):
            return heapq.heappop(heap)[2]
        return in_order.popleft()

    def __len__(self) -> int:
        return len(self._in_order) + len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._in_order) or bool(self._heap)
