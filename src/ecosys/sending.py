"""``@sender``: turn a function that builds a request into a typed remote call."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from .transport.client import Client

P = ParamSpec("P")
R = TypeVar("R")


def wrap_builder(
    build: Callable[..., Any], deliver: Callable[[Any], Awaitable[R]]
) -> Callable[..., Awaitable[R]]:
    """Wrap *build* (sync or async, returning a message): calling it hands the message to *deliver*.

    The shape shared by @sender, @broadcaster and the queued decorators.
    """
    is_async = inspect.iscoroutinefunction(build)

    @functools.wraps(build)
    async def call(*args: Any, **kwargs: Any) -> R:
        message = build(*args, **kwargs)
        if is_async:
            message = await message
        return await deliver(message)

    return call


def sender(
    client: Client,
    route_key: str,
    response_model: Any = None,
    *,
    timeout: float | None = None,
) -> Callable[[Callable[P, Any]], Callable[P, Awaitable[Any]]]:
    """Decorate a (sync or async) function that returns the request data.

    Calling the decorated function sends that data to *route_key* through
    *client* and returns the response parsed as *response_model* (the raw data
    when None). An error response raises the matching ResponseError subclass;
    the uid of the request being handled, if any, is sent along.
    """

    def decorate(build: Callable[P, Any]) -> Callable[P, Awaitable[Any]]:
        send = wrap_builder(build, lambda message: client.request(
            route_key, message, response_model=response_model, timeout=timeout
        ))
        send.client = client  # type: ignore[attr-defined]
        send.route_key = route_key  # type: ignore[attr-defined]
        return send

    return decorate


Target = tuple[Client, str]


class BroadcastResult:
    """What one target of a broadcast answered: ``data``, or the ``error`` raised."""

    __slots__ = ("client", "route_key", "data", "error")

    def __init__(self, client: Client, route_key: str, data: Any = None,
                 error: BaseException | None = None) -> None:
        self.client = client
        self.route_key = route_key
        self.data = data
        self.error = error

    @property
    def ok(self) -> bool:
        """True when the target answered with status 0."""
        return self.error is None

    @property
    def target(self) -> str:
        """``route_key @ url``, for messages and logs."""
        return f"{self.route_key} @ {self.client.url}"

    def __repr__(self) -> str:
        outcome = f"data={self.data!r}" if self.ok else f"error={self.error!r}"
        return f"BroadcastResult({self.target}, {outcome})"


class Broadcaster:
    """Sends one message to every (client, route_key) target at once.

    One target failing does not stop the others: every target gets its own
    :class:`BroadcastResult`, in the order the targets were given.
    """

    def __init__(self, targets: list[Target], *, timeout: float | None = None) -> None:
        if not targets:
            raise ValueError("a broadcaster needs at least one (client, route_key) target")
        self.targets = list(targets)
        self.timeout = timeout

    async def send(self, message: Any) -> list[BroadcastResult]:
        """Send *message* to every target; return one result per target."""

        async def one(client: Client, route_key: str) -> BroadcastResult:
            try:
                data = await client.request(route_key, message, timeout=self.timeout)
            except Exception as exc:  # each target's failure is its own result
                return BroadcastResult(client, route_key, error=exc)
            return BroadcastResult(client, route_key, data=data)

        return list(await asyncio.gather(*(one(c, r) for c, r in self.targets)))


def broadcaster(
    targets: list[Target], *, timeout: float | None = None
) -> Callable[[Callable[P, Any]], Callable[P, Awaitable[list[BroadcastResult]]]]:
    """Decorate a (sync or async) function building a message; calling it broadcasts the message."""
    sending = Broadcaster(targets, timeout=timeout)

    def decorate(build: Callable[P, Any]) -> Callable[P, Awaitable[list[BroadcastResult]]]:
        send = wrap_builder(build, sending.send)
        send.broadcaster = sending  # type: ignore[attr-defined]
        return send

    return decorate
