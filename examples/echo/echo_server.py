"""The echo server: answers every "echo" request with the same message.

Run it:  python examples/echo/echo_server.py -i 0 --tcp 127.0.0.1:8888 --udp 127.0.0.1:8888 --uds DEFAULT
"""

import logging

from pydantic import BaseModel

from ecosys import Application, endpoint

log = logging.getLogger("echo_server")


class Echo(BaseModel):
    """What is sent, and what comes back."""

    message: str


@endpoint("echo")
async def echo(request: Echo) -> Echo:
    """Return the message unchanged."""
    log.info("echoing %d characters", len(request.message))
    return Echo(message=request.message)


if __name__ == "__main__":
    Application().run()
