"""Queued and sequenced broadcasting: one durable queued sender per target."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import BroadcastIncomplete, ConfigurationError
from ..routing import Registry, default_registry
from ..sending import Target, wrap_builder
from ..transport.client import Client
from ..transport.tcp import TcpClient
from ..transport.udp import UdpClient
from ..transport.uds import UdsClient
from .sender import QueuedSender, SenderNotOpen

# Characters a target key may not hold: it is part of its queue's file names.
_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_.-]")


def target_key(client: Client, route_key: str) -> str:
    """The default key of a target: its address and route key, fit for file names.

    ``10.0.0.5_7000.config.apply``; for a UDS target the socket file's name.
    Always both parts, so a target's key never depends on the other targets
    in the list (adding one must not rename another's queue).
    """
    if isinstance(client, (TcpClient, UdpClient)):
        address = f"{client.host}_{client.port}"
    elif isinstance(client, UdsClient):
        address = os.path.basename(client.path) or client.path
    else:
        address = client.url
    return _NOT_IN_KEY.sub("_", f"{address}.{route_key}")


def _keyed_targets(name: str, targets: list[Target] | Mapping[str, Target]) -> dict[str, Target]:
    """Each target under the key its queue is named after: given, or derived from its address."""
    if isinstance(targets, Mapping):
        for key in targets:
            if not isinstance(key, str) or not key or _NOT_IN_KEY.search(key):
                raise ConfigurationError(f"queued broadcaster {name!r}: target key {key!r} may hold "
                                         "only letters, digits, '_', '.' and '-'")
        return dict(targets)
    keyed: dict[str, Target] = {}
    for client, route_key in targets:
        key = target_key(client, route_key)
        if key in keyed:
            other, other_route = keyed[key]
            if (other.url, other_route) == (client.url, route_key):
                raise ConfigurationError(f"queued broadcaster {name!r}: {route_key!r} @ {client.url} "
                                         "is listed twice")
            raise ConfigurationError(
                f"queued broadcaster {name!r}: {other_route!r} @ {other.url} and {route_key!r} @ "
                f"{client.url} would share the queue {name}.{key}; give the targets keys of your "
                "own: queued_broadcaster({'a': (client, route_key), ...}, ...)")
        keyed[key] = (client, route_key)
    return keyed


def queued_broadcaster(
    targets: list[Target] | Mapping[str, Target],
    *,
    name: str,
    registry: Registry | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[list[str]]]]:
    """Decorate a function building a message; calling it queues the message for every target.

    Each target gets its own queued sender, named ``<name>.<key>``, so each has
    its own durable queue, retries, error queue and, with ``sequenced=True``,
    its own strict order: a target that is down holds back only its own
    deliveries. The key is the target's address and route key
    (``10.0.0.5_7000.config.apply``; a socket file's name for UDS), or the
    key given when *targets* is a mapping: never its position, so a list
    changed between runs delivers what is pending to the target it was meant
    for. Options are those of QueuedSender. Returns the uid stored for each target, in target order.
    """
    if not targets:
        raise ConfigurationError(f"queued broadcaster {name!r} needs at least one target")
    chosen = registry if registry is not None else default_registry
    senders = [
        chosen.add_sender(QueuedSender(client, route_key, name=f"{name}.{key}", **options))
        for key, (client, route_key) in _keyed_targets(name, targets).items()
    ]

    async def enqueue_everywhere(message: Any) -> list[str]:
        # Every target at once, each on its own: one failing store must not keep
        # the message from the targets after it, and the caller must learn which
        # ones have it (a blind retry would give those a second copy).
        results = await asyncio.gather(*(sender.enqueue(message) for sender in senders),
                                       return_exceptions=True)
        failed = {s.name: r for s, r in zip(senders, results, strict=True) if isinstance(r, BaseException)}
        if failed and len(failed) == len(senders) and all(
                isinstance(exc, SenderNotOpen) for exc in failed.values()):
            # Called before the application started: nothing was stored anywhere.
            raise SenderNotOpen(f"queued broadcaster {name!r} is not open; start the Application first")
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
