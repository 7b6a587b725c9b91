"""``@run_soon``: fire-and-forget coroutines that are never silently lost."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

log = logging.getLogger("ecosys.tasks")

P = ParamSpec("P")


def retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Done callback: mark a failure as seen, so asyncio does not log "never retrieved"."""
    if not future.cancelled():
        future.exception()


class TaskKeeper:
    """Holds a reference to every scheduled task, logs failures, drains at shutdown."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Schedule *coro* now and keep it until it finishes."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("run_soon task %s failed", task.get_name(), exc_info=exc)

    async def wait_all(self, timeout: float | None = None) -> int:
        """Wait for running tasks (including ones they start); cancel what remains after *timeout*.

        Returns how many tasks had to be cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.tasks:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(list(self.tasks), timeout=remaining)
            if pending and deadline is not None and loop.time() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("cancelled %d run_soon task(s) still running at shutdown", len(pending))
                return len(pending)
        return 0

    def reset(self) -> None:
        """Forget every task (tests call this between cases)."""
        self.tasks.clear()


default_task_keeper = TaskKeeper()
_active_keeper: TaskKeeper | None = None


def use_task_keeper(keeper: TaskKeeper | None) -> None:
    """Make *keeper* receive run_soon tasks (the running Application's); None restores the default."""
    global _active_keeper
    _active_keeper = keeper


def active_task_keeper() -> TaskKeeper:
    """The keeper run_soon schedules into right now."""
    return _active_keeper if _active_keeper is not None else default_task_keeper


def run_soon(
    func: Callable[P, Coroutine[Any, Any, Any]],
) -> Callable[P, asyncio.Task[Any]]:
    """Decorate a coroutine function so that calling it schedules it and returns the task."""
    if not asyncio.iscoroutinefunction(func):
        raise TypeError(f"run_soon needs an async function, got {func!r}")

    @functools.wraps(func)
    def schedule(*args: P.args, **kwargs: P.kwargs) -> asyncio.Task[Any]:
        return active_task_keeper().spawn(func(*args, **kwargs), name=func.__qualname__)

    return schedule
