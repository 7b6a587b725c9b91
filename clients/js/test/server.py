"""The ecosys service the JavaScript client's tests talk to.

Started by the tests (clients/js/test-support/harness.js) as
``python server.py -i jstest --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --uds DIR/s.sock``;
they read the bound addresses from the start-up banner.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from ecosys import Application, Reject, endpoint


class Echo(BaseModel):
    message: str


class Sleep(BaseModel):
    seconds: float
    tag: str | None = None


class Big(BaseModel):
    size: int


class RejectWith(BaseModel):
    status: int
    message: str = "rejected on request"
    details: Any = None


@endpoint("echo")
async def echo(request: Echo) -> Echo:
    """Return the message unchanged."""
    return request


@endpoint("sleep")
async def sleep(request: Sleep) -> dict[str, Any]:
    """Answer after ``seconds``, with the tag, to test timeouts and ordering."""
    await asyncio.sleep(request.seconds)
    return {"slept": request.seconds, "tag": request.tag}


@endpoint("boom")
async def boom() -> None:
    """Always fails: the caller gets status 600."""
    raise RuntimeError("kaboom")


@endpoint("whoami")
async def whoami(uid: str) -> str:
    """Return the request's uid exactly as it came on the wire."""
    return uid


@endpoint("big")
async def big(request: Big) -> str:
    """Return a string of ``size`` characters."""
    return "x" * request.size


@endpoint("reject")
async def reject(request: RejectWith) -> None:
    """Answer with the status, message and details asked for."""
    raise Reject(request.status, request.message, request.details)


if __name__ == "__main__":
    Application("jstest_server").run()
