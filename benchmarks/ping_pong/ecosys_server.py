"""The ecosys side of the ping-pong benchmark: one "ping" endpoint that returns its request.

Started by run.py as:  ecosys_server.py -i bench --tcp HOST:PORT --udp HOST:PORT --uds PATH
--event_loop asyncio|uvloop  (stdin a pipe from run.py; see parent_watch).
"""

from __future__ import annotations

from parent_watch import stop_when_parent_exits
from pydantic import BaseModel

from ecosys import Application, endpoint


class Ping(BaseModel):
    """The request and the response."""

    seq: int


@endpoint("ping")
async def ping(request: Ping) -> Ping:
    """Return the request unchanged."""
    return request


if __name__ == "__main__":
    stop_when_parent_exits()
    Application("ping_server").run()
