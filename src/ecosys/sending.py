"""``@sender``: turn a function that builds a request into a typed remote call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from .transport.client import Client

P = ParamSpec("P")
R = TypeVar("R")


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
        is_async = inspect.iscoroutinefunction(build)

        @functools.wraps(build)
        async def send(*args: P.args, **kwargs: P.kwargs) -> Any:
            message = build(*args, **kwargs)
            if is_async:
                message = await message
            return await client.request(
                route_key, message, response_model=response_model, timeout=timeout
            )

        send.client = client  # type: ignore[attr-defined]
        send.route_key = route_key  # type: ignore[attr-defined]
        return send

    return decorate
