"""A plain endpoint "echo" that returns its request: the @endpoint baseline and the senders' target.

Started by run.py as:  plain_server.py -i bench --uds PATH --event_loop KIND (stdin a pipe
from run.py; see parent_watch).
"""

from __future__ import annotations

from models import Order
from parent_watch import stop_when_parent_exits

from ecosys import Application, endpoint


@endpoint("echo")
async def echo(request: Order) -> Order:
    """Return the request unchanged."""
    return request


if __name__ == "__main__":
    stop_when_parent_exits()
    Application("plain_server").run()
