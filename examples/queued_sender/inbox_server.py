"""The inbox: the target the outbox delivers to. It prints (and logs) every message it gets.

Run it:  python examples/queued_sender/inbox_server.py -i 0 --tcp 127.0.0.1:8811
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from ecosys import Application, endpoint

log = logging.getLogger("inbox")


class Message(BaseModel):
    """One message for one customer; seq numbers a customer's messages from 1."""

    customer: str
    seq: int
    text: str


@endpoint("inbox.store")
async def store(request: Message, uid: str) -> None:
    """Keep the message (here: print and log it). The uid is the one the outbox gave it."""
    print(f"inbox got {request.customer} #{request.seq}: {request.text} (uid {uid})", flush=True)
    log.info("stored %s #%d: %s", request.customer, request.seq, request.text)


if __name__ == "__main__":
    Application().run()
