"""The deadlines of a connection's requests in flight, earliest first, for one shared timer.

A client almost always uses one timeout for all its requests, so each new
deadline is the latest so far: those go on the end of a deque, and answered
ones leave from its front as they come up. Only a deadline earlier than the
last (a call with a shorter timeout of its own) goes on a heap beside it.
Compared with a heap for everything, the common request costs an append
instead of a push, and no periodic sweep for answered entries.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Settles(Protocol):
    """What a deadline watches: anything with done() (an asyncio future)."""

    def done(self) -> bool:
        """True once it needs no deadline any more."""
        ...


F = TypeVar("F", bound=Settles)

# Past this many entries per one still waiting, answered entries stuck behind a
# slow one are swept out (they cannot leave from the front while it waits).
_SWEEP_FACTOR = 4
_SWEEP_MIN = 64


class Deadlines(Generic[F]):
    """Deadlines (loop time) of futures, with the timeout and uid each belongs to."""

    def __init__(self) -> None:
        self._in_order: deque[tuple[float, F, float, str]] = deque()
        self._earlier: list[tuple[float, int, F, float, str]] = []  # a heap
        self._count = itertools.count()

    def __len__(self) -> int:
        return len(self._in_order) + len(self._earlier)

    def add(self, deadline: float, future: F, timeout: float, uid: str, waiting: int) -> None:
        """Watch *future* until *deadline*.

        *waiting* is how many futures are still unanswered, to bound the
        answered entries kept.
        """
        in_order = self._in_order
        while in_order and in_order[0][1].done():
            in_order.popleft()
        if len(in_order) > _SWEEP_FACTOR * waiting + _SWEEP_MIN:
            self._in_order = in_order = deque(d for d in in_order if not d[1].done())
        if not in_order or deadline >= in_order[-1][0]:
            in_order.append((deadline, future, timeout, uid))
            return
        earlier = self._earlier
        if len(earlier) > _SWEEP_FACTOR * waiting + _SWEEP_MIN:
            earlier[:] = [d for d in earlier if not d[2].done()]
            heapq.heapify(earlier)
        heapq.heappush(earlier, (deadline, next(self._count), future, timeout, uid))

    def pop_due(self, now: float) -> Iterator[tuple[F, float, str]]:
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
        in_order, earlier = self._in_order, self._earlier
        while in_order and in_order[0][1].done():
            in_order.popleft()
        while earlier and earlier[0][2].done():
            heapq.heappop(earlier)
        if in_order and earlier:
            return min(in_order[0][0], earlier[0][0])
        if in_order:
            return in_order[0][0]
        return earlier[0][0] if earlier else None

    def clear(self) -> None:
        """Forget every deadline."""
        self._in_order.clear()
        self._earlier.clear()
