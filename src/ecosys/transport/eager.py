"""Run a handler's Task to its first suspension at once, inside the read that brought the request.

Most handlers of small services answer without awaiting anything. Running
the first step inside ``data_received`` writes their response in the same
event-loop iteration that read the request, instead of answering one
iteration later (and a read of many pipelined requests is answered with one
write). The step always runs inside a real Task, so ``asyncio.current_task()``
and ``asyncio.timeout()`` work in a handler from its first line.

Python 3.12 does this itself (``eager_start``). On 3.11 asyncio's own loop
schedules the new Task's first step as the last ready callback; we take that
callback back and run it now. On other 3.11 loops (uvloop) the first step
runs in the next loop iteration, as for any Task.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

NATIVE_EAGER_START = sys.version_info >= (3, 12)


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any] | None:
    """Run *coro* as a Task up to its first suspension; return the Task, or None if it finished."""
    if NATIVE_EAGER_START:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return None if task.done() else task
    task = loop.create_task(coro)
    ready = getattr(loop, "_ready", None)
    if ready:
        handle = ready[-1]
        # Only the step just scheduled for this very Task, and never from inside
        # another Task's step (two Tasks cannot be current at once).
        if getattr(handle._callback, "__self__", None) is task and asyncio.current_task(loop) is None:
            ready.pop()
            handle._run()
    return None if task.done() else task
