"""A test service: ``echo`` answers at once, ``slow`` sleeps the given seconds first.

Run:  python tests/apps/slow_server.py -i 1 --tcp 127.0.0.1:PORT --uds DEFAULT

``slow`` prints ``slow started <uid>`` on stdout when it begins, so a test
knows the request is in flight before it signals the process.
"""

import asyncio
import logging

from pydantic import BaseModel

from ecosys import Application, endpoint

log = logging.getLogger("slow_server")


class Echo(BaseModel):
    """Request and answer of ``echo``."""

    message: str


class Slow(BaseModel):
    """How long ``slow`` sleeps before answering."""

    seconds: float


@endpoint("echo")
async def echo(request: Echo) -> Echo:
    """Answer with the same message."""
    return request


@endpoint("slow")
async def slow(request: Slow, uid: str) -> dict:
    """Sleep, then answer how long it slept."""
    print(f"slow started {uid}", flush=True)
    log.info("slow request sleeping %.2fs", request.seconds)
    await asyncio.sleep(request.seconds)
    log.info("slow request done")
    return {"slept": request.seconds}


if __name__ == "__main__":
    Application().run()
