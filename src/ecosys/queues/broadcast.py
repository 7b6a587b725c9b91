"""Queued and sequenced broadcasting: one durable queued sender per target."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ConfigurationError
from ..routing import Registry
from ..sending import Target
from .sender import QueuedSender, queued_sender


def queued_broadcaster(
    targets: list[Target],
    *,
    name: str,
    registry: Registry | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[list[str]]]]:
    """Decorate a function building a message; calling it queues the message for every target.

    Each target gets its own queued sender, named ``<name>.<n>`` (n counts from
    0 in target order), so each has its own durable queue, retries, error queue
    and, with ``sequenced=True``, its own strict order: a target that is down
    holds back only its own deliveries. Options are those of QueuedSender.
    Returns the uid stored for each target, in target order.
    """
    if not targets:
        raise ConfigurationError(f"queued broadcaster {name!r} needs at least one target")
    senders: list[QueuedSender] = []
    for index, (client, route_key) in enumerate(targets):
        store = queued_sender(client, route_key, name=f"{name}.{index}", registry=registry,
                              **options)(lambda message: message)
        senders.append(store.queued_sender)  # type: ignore[attr-defined]

    def decorate(build: Callable[..., Any]) -> Callable[..., Awaitable[list[str]]]:
        is_async = inspect.iscoroutinefunction(build)

        @functools.wraps(build)
        async def store_all(*args: Any, **kwargs: Any) -> list[str]:
            message = build(*args, **kwargs)
            if is_async:
                message = await message
            return [await sender.enqueue(message) for sender in senders]

        store_all.queued_senders = senders  # type: ignore[attr-defined]
        return store_all

    return decorate
