"""The deadlines of a connection's requests in flight, earliest first, for one shared timer.

A client almost always uses one timeout for all its requests, so each new
deadline is the latest so far: those go on the end of a deque, and answered
ones leave from its front as they come up. Only a deadline earlier than the
last (a call with a shorter timeout of its own) goes on a heap beside it.
Compared with a heap for everything, the common request costs an append
instead of a push, and no periodic sweep for answered entries.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any

# Past this many entries per one still waiting, answered entries stuck behind a
# slow one are swept out (they cannot leave from the front while it waits).
_SWEEP_FACTOR = 4
_SWEEP_MIN = 64


class Deadlines:
    """Deadlines (loop time) of futures, with the timeout and uid each belongs to."""

    def __init__(self) -> None:
        self._in_order: deque[tuple[float, asyncio.Future[Any], float, str]] = deque()
        self._earlier: list[tuple[float, int, asyncio.Future[Any], float, str]] = []  # a heap
        self._count = itertools.count()

    def __len__(self) -> int:
        return len(self._in_order) + len(self._earlier)

    def add(
        self, deadline: float, future: asyncio.Future[Any], timeout: float, uid: str, waiting: int
    ) -> None:
        """Watch *future* until *deadline*.

        *waiting* is how many futures are still unanswered, to bound the
        answered entries kept.
        """
        self._drop_answered_fronts()
        in_order, earlier = self._in_order, self._earlier
        if not in_order or deadline >= in_order[-1][0]:
            if len(in_order) > _SWEEP_FACTOR * waiting + _SWEEP_MIN:
                self._in_order = in_order = deque(d for d in in_order if not d[1].done())
            in_order.append((deadline, future, timeout, uid))
            return
        if len(earlier) > _SWEEP_FACTOR * waiting + _SWEEP_MIN:
            earlier[:] = [d for d in earlier if not d[2].done()]
            heapq.heapify(earlier)
        heapq.heappush(earlier, (deadline, next(self._count), future, timeout, uid))

    def pop_due(self, now: float) -> Iterator[tuple[asyncio.Future[Any], float, str]]:
        """Remove and yield (future, timeout, uid) of every deadline at or before *now* (in no set order)."""
        in_order, earlier = self._in_order, self._earlier
        while in_order and in_order[0][0] <= now:
            _, future, timeout, uid = in_order.popleft()
            yield future, timeout, uid
        while earlier and earlier[0][0] <= now:
            _, _, future, timeout, uid = heapq.heappop(earlier)
            yield future, timeout, uid

    def earliest(self) -> float | None:
        """The earliest deadline of a future not yet done (answered entries are dropped)."""
        self._drop_answered_fronts()
        heads = [entries[0][0] for entries in (self._in_order, self._earlier) if entries]
        return min(heads) if heads else None

    def _drop_answered_fronts(self) -> None:
        in_order, earlier = self._in_order, self._earlier
        while in_order and in_order[0][1].done():
            in_order.popleft()
        while earlier and earlier[0][2].done():
            heapq.heappop(earlier)

    def clear(self) -> None:
        """Forget every deadline."""
        self._in_order.clear()
        self._earlier.clear()
