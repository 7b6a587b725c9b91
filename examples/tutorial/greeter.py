"""The greeter: answers greetings, and keeps a guestbook signed through a durable queue.

Run it:  ECOENV_QUEUE_DIR=/tmp/tutorial python examples/tutorial/greeter.py -i 0 --tcp 127.0.0.1:8801

This is the back service of the tutorial (docs/tutorial.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from pydantic import BaseModel, Field

from ecosys import Application, current_app, endpoint, queued_endpoint, stats

log = logging.getLogger("greeter")


class Greet(BaseModel):
    """Who to greet."""

    name: str = Field(min_length=1, max_length=100)


class Greeting(BaseModel):
    """The greeting."""

    text: str


@endpoint("greeter.greet")
async def greet(request: Greet) -> Greeting:
    """Answer at once: the caller waits for this."""
    log.info("greeting %s", request.name)
    stats.increment("greeter.greetings")
    return Greeting(text=f"Hello, {request.name}!")


class Signature(BaseModel):
    """One entry for the guestbook."""

    name: str = Field(min_length=1, max_length=100)


def guestbook_path() -> Path:
    """The guestbook file: next to the queue files, which ECOENV_QUEUE_DIR must name anyway."""
    config = current_app().config
    # An application with a queued endpoint does not start without a queue directory.
    assert config is not None and config.queue_dir is not None
    return config.queue_dir / "guestbook.txt"


def write_signature(path: Path, uid: str, name: str) -> None:
    """Append the signature unless its uid is already there (a request may be handled twice)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if any(json.loads(line)["uid"] == uid for line in lines):
        return
    # One JSON object per line: a name with a line break in it stays on its line.
    with path.open("a", encoding="utf-8") as book:
        book.write(json.dumps({"uid": uid, "name": name}) + "\n")


@queued_endpoint("greeter.sign", max_retries=3)
async def sign(request: Signature, uid: str) -> bool:
    """Stored on disk and acknowledged first; this runs afterwards, in the background."""
    await asyncio.to_thread(write_signature, guestbook_path(), uid, request.name)
    log.info("%s signed the guestbook", request.name)
    stats.increment("greeter.signatures")
    return True  # done; False would mean "try again later"


@endpoint("greeter.guestbook")
async def guestbook() -> list[str]:
    """Every name in the guestbook, oldest first."""
    path = guestbook_path()
    if not path.exists():
        return []
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    return [json.loads(line)["name"] for line in text.splitlines()]


if __name__ == "__main__":
    Application().run()
