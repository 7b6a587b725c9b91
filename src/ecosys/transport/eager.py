"""Run a coroutine's first step at once; only if it suspends does it become a Task.

Most handlers of small services answer without awaiting anything. Running
the first step inside ``data_received`` writes their response in the same
event-loop iteration that read the request, instead of scheduling a Task and
answering one iteration later (the idea of Python 3.12's eager tasks, for 3.11).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


class _Resume:
    """Awaitable that continues an already-started coroutine inside a Task."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        if getattr(yielded, "_asyncio_future_blocking", None) is False:
            # start_eagerly consumed the flag; the Task driving us needs it set again.
            yielded._asyncio_future_blocking = True
        while True:
            try:
                # Hand what the coroutine is blocked on to the Task driving us.
                value = yield yielded
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value


async def _finish(resume: _Resume) -> Any:
    return await resume


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any] | None:
    """Run *coro* until it first suspends; return the Task finishing it, or None if it finished."""
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    if getattr(yielded, "_asyncio_future_blocking", False):
        # Consume the "awaited" flag the way a Task step would: while it stays
        # set, any other coroutine awaiting the same future fails with
        # "await wasn't used with future". _Resume sets it again for its Task.
        yielded._asyncio_future_blocking = False
    return loop.create_task(_finish(_Resume(coro, yielded)), context=context)
