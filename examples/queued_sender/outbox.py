"""The outbox: accepts messages at once and delivers them to the inbox when it can, in order.

Run it (the inbox may be down; messages wait on disk until it is up):

    ECOENV_QUEUE_DIR=/tmp/outbox python examples/queued_sender/outbox.py -i 0 --tcp 127.0.0.1:8810

The inbox address comes from the OUTBOX_INBOX_URL environment variable
(default tcp://127.0.0.1:8811).

- ``outbox.send`` ``{"customer": "alice", "seq": 1, "text": "hi"}`` -> ``{"uid": "...", "pending": 3}``:
  the message is stored durably and handed to a sequenced queued sender.
- The sender delivers to ``inbox.store``: messages of one customer one at a time and in
  the order they were stored; different customers do not wait for each other. While the
  inbox cannot be reached, each message is retried with an exponential back-off
  (0.2 s, 0.4 s, 0.8 s, ... at most 2 s between attempts), for ever.
- ``eco.queued_sender.data`` ``{"queue_route_key": "to_inbox"}`` shows how many messages
  wait, how many are in flight and how many were delivered.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from ecosys import Application, backoff, client_from_url, endpoint, queued_sender

INBOX_URL = os.environ.get("OUTBOX_INBOX_URL", "tcp://127.0.0.1:8811")

# retries=0: the queued sender does its own retrying, with the back-off below.
inbox = client_from_url(INBOX_URL, timeout=5.0, retries=0)


class Message(BaseModel):
    """One message for one customer."""

    customer: str
    seq: int
    text: str


class Queued(BaseModel):
    """The answer of outbox.send: the message's uid (the inbox sees the same one)."""

    uid: str
    pending: int


@queued_sender(
    inbox, "inbox.store", name="to_inbox",
    sequenced=True, group_key=lambda message: message.customer,
    backoff=backoff.exponential(base=0.2, factor=2.0, cap=2.0),
)
def deliver(message: Message) -> Message:
    """Build what goes to the inbox; calling deliver() stores it and returns its uid."""
    return message


@endpoint("outbox.send")
async def send(request: Message) -> Queued:
    """Store the message for delivery and answer at once."""
    # Called while handling this request, so the message gets this request's uid.
    uid = await deliver(request)
    return Queued(uid=uid, pending=deliver.queued_sender.data()["pending"])


if __name__ == "__main__":
    Application().run()
