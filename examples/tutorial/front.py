"""The front: the service clients talk to. It asks the greeter for greetings (a direct,
typed call through @sender) and hands guestbook signatures to it through a durable
queued sender, so a signature is never lost while the greeter is down.

Run it:  ECOENV_QUEUE_DIR=/tmp/tutorial python examples/tutorial/front.py -i 0 --tcp 127.0.0.1:8800

The greeter's address comes from the GREETER_URL environment variable
(default tcp://127.0.0.1:8801). This is the front service of the tutorial (docs/tutorial.md).
"""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel, Field

from ecosys import (
    Application,
    Reject,
    Status,
    TransportError,
    backoff,
    client_from_url,
    endpoint,
    queued_sender,
    sender,
)

log = logging.getLogger("front")

GREETER_URL = os.environ.get("GREETER_URL", "tcp://127.0.0.1:8801")
greeter = client_from_url(GREETER_URL, timeout=5.0)


class Visitor(BaseModel):
    """A visitor of the front."""

    name: str = Field(min_length=1, max_length=100)


class Greet(BaseModel):
    """What greeter.greet takes."""

    name: str


class Greeting(BaseModel):
    """What greeter.greet answers."""

    text: str


class Welcome(BaseModel):
    """What front.welcome answers; uid is the request's, to look for in the logs."""

    text: str
    uid: str


@sender(greeter, "greeter.greet", Greeting)
def ask_greeting(name: str) -> Greet:
    """Build the request; calling ask_greeting() sends it and returns a Greeting."""
    return Greet(name=name)


@endpoint("front.welcome")
async def welcome(request: Visitor, uid: str) -> Welcome:
    """Greet the visitor, with the greeter's help."""
    log.info("welcoming %s", request.name)
    try:
        greeting = await ask_greeting(request.name)
    except TransportError as exc:
        raise Reject(Status.APPLICATION_BUSY, f"the greeter is not reachable: {exc}") from None
    return Welcome(text=f"{greeting.text} Welcome to the front.", uid=uid)


# retries=0: the queued sender does its own retrying, with the back-off below.
greeter_queue = client_from_url(GREETER_URL, timeout=5.0, retries=0)


class Signature(BaseModel):
    """What greeter.sign takes."""

    name: str


class Queued(BaseModel):
    """What front.sign answers: the uid the greeter will see, and how many wait."""

    uid: str
    pending: int


@queued_sender(greeter_queue, "greeter.sign", name="guestbook",
               backoff=backoff.exponential(base=0.2, factor=2.0, cap=2.0))
def send_signature(name: str) -> Signature:
    """Build the message; calling send_signature() stores it on disk and returns its uid."""
    return Signature(name=name)


@endpoint("front.sign")
async def sign(request: Visitor) -> Queued:
    """Accept a signature at once, whether the greeter is up or not."""
    uid = await send_signature(request.name)
    log.info("queued the signature of %s", request.name)
    return Queued(uid=uid, pending=send_signature.queued_sender.data()["pending"])


@sender(greeter, "greeter.guestbook", list[str])
def ask_guestbook() -> None:
    """greeter.guestbook takes no data."""
    return None


@endpoint("front.guestbook")
async def guestbook() -> list[str]:
    """The greeter's guestbook."""
    try:
        return await ask_guestbook()
    except TransportError as exc:
        raise Reject(Status.APPLICATION_BUSY, f"the greeter is not reachable: {exc}") from None


if __name__ == "__main__":
    Application().run()
