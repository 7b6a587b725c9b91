"""Two queued senders to the "echo" endpoint of plain_server.py, and an endpoint that fills them.

- "outbox": not sequenced, default concurrency.
- "outbox_seq": sequenced, the group being seq % GROUPS.

The endpoint "enqueue_batch" {"sender": name, "first": n, "count": m} enqueues m messages
at once (m concurrent enqueues, so they share commits) and answers when all are stored.

Started by run.py as:  sender_server.py -i bench --uds PATH --event_loop KIND, with
ECOENV_QUEUE_DIR and ECOENV_DEFAULT_DIR set to a temporary directory and
QBENCH_TARGET_UDS to the socket of the target (plain_server.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models import GROUPS, Order, order
from parent_watch import stop_when_parent_exits
from pydantic import BaseModel

from ecosys import Application, UdsClient, endpoint, new_uid, queued_sender, set_uid

TARGET = UdsClient(os.environ.get("QBENCH_TARGET_UDS", "target.sock"))


@queued_sender(TARGET, "echo", name="outbox")
def outbox(message: Order) -> Order:
    """Deliver *message* to the target, any order."""
    return message


@queued_sender(TARGET, "echo", name="outbox_seq", sequenced=True,
               group_key=lambda message: message.seq % GROUPS)
def outbox_seq(message: Order) -> Order:
    """Deliver *message* to the target, in order within its group."""
    return message


SENDERS: dict[str, Callable[[Order], Awaitable[str]]] = {"outbox": outbox, "outbox_seq": outbox_seq}


class Batch(BaseModel):
    """Which sender, and which sequence numbers to enqueue."""

    sender: str
    first: int
    count: int
    # False: each message gets its own uid, as if each came from a different request.
    # True: every message keeps this request's uid (what ecosys does by default when a
    # handler enqueues); the sender's client then delivers them one at a time.
    inherit_uid: bool = False


async def _enqueue_fresh(send: Callable[[Order], Awaitable[str]], message: Order) -> str:
    # gather() runs this in its own task, with its own copy of the context.
    set_uid(new_uid())
    return await send(message)


@endpoint("enqueue_batch")
async def enqueue_batch(request: Batch) -> dict[str, Any]:
    """Enqueue request.count messages concurrently; answer once every one is stored."""
    send = SENDERS[request.sender]
    started = time.perf_counter()
    messages = [Order(**order(seq)) for seq in range(request.first, request.first + request.count)]
    if request.inherit_uid:
        await asyncio.gather(*(send(message) for message in messages))
    else:
        await asyncio.gather(*(_enqueue_fresh(send, message) for message in messages))
    return {"enqueue_seconds": time.perf_counter() - started}


if __name__ == "__main__":
    stop_when_parent_exits()
    Application("sender_server").run()
