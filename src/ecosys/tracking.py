"""Distributed request tracking: the uid of the request being handled.

The server sets :data:`current_uid` before it calls a handler; every client
call reads it, so a request sent while handling another carries the same uid
with no code from the user. Tasks started from a handler inherit it because
asyncio copies the context into new tasks.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

current_uid: ContextVar[str | None] = ContextVar("ecosys_current_uid", default=None)


def get_uid() -> str | None:
    """The uid of the request being handled in this context, or None."""
    return current_uid.get()


def set_uid(uid: str | uuid.UUID | None) -> None:
    """Set the uid used by requests sent from this context from now on."""
    current_uid.set(None if uid is None else str(uuid.UUID(str(uid))))


@contextlib.contextmanager
def uid_scope(uid: str | uuid.UUID | None = None) -> Iterator[str]:
    """Use *uid* (a fresh one if None) for requests sent inside the ``with`` block."""
    value = str(uuid.uuid4()) if uid is None else str(uuid.UUID(str(uid)))
    token = current_uid.set(value)
    try:
        yield value
    finally:
        current_uid.reset(token)
