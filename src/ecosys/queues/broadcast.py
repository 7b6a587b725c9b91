"""Queued and sequenced broadcasting: one durable queued sender per target."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import BroadcastIncomplete, ConfigurationError
from ..routing import Registry, default_registry
from ..sending import Target, wrap_builder
from .sender import QueuedSender


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
    chosen = registry if registry is not None else default_registry
    senders = [
        chosen.add_sender(QueuedSender(client, route_key, name=f"{name}.{index}", **options))
        for index, (client, route_key) in enumerate(targets)
    ]

    async def enqueue_everywhere(message: Any) -> list[str]:
        # Every target at once, each on its own: one failing store must not keep
        # the message from the targets after it, and the caller must learn which
        # ones have it (a blind retry would give those a second copy).
        results = await asyncio.gather(*(sender.enqueue(message) for sender in senders),
                                       return_exceptions=True)
        failed = {s.name: r for s, r in zip(senders, results, strict=True) if isinstance(r, BaseException)}
        if failed:
            stored = {s.name: r for s, r in zip(senders, results, strict=True) if isinstance(r, str)}
            names = ", ".join(f"{key} ({type(exc).__name__}: {exc})" for key, exc in failed.items())
            raise BroadcastIncomplete(
                f"broadcaster {name!r}: stored for {len(stored)} of {len(senders)} targets; failed: {names}",
                stored, failed)
        return [r for r in results if isinstance(r, str)]

    def decorate(build: Callable[..., Any]) -> Callable[..., Awaitable[list[str]]]:
        store_all = wrap_builder(build, enqueue_everywhere)
        store_all.queued_senders = senders  # type: ignore[attr-defined]
        return store_all

    return decorate
