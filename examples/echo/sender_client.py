"""A client for the echo server written with @sender: a typed remote call.

Run it:  python examples/echo/sender_client.py tcp://127.0.0.1:8888 "hello"
"""

import asyncio
import sys

from pydantic import BaseModel

from ecosys import ResponseError, TransportError, client_from_url, sender


class Echo(BaseModel):
    """The echo endpoint's request and response model."""

    message: str


URL = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8888"
client = client_from_url(URL, timeout=5.0)


@sender(client, "echo", Echo)
def send_echo(message: str) -> Echo:
    """Build the request; calling send_echo sends it and returns the reply as an Echo."""
    return Echo(message=message)


async def main(text: str) -> int:
    """Call the echo endpoint through the sender and print the typed reply."""
    try:
        reply = await send_echo(text)
    except ResponseError as exc:
        print(f"the server answered status {exc.status}: {exc.message}")
        return 1
    except TransportError as exc:  # no server there, a timeout, a dropped connection
        print(f"failed: {exc}")
        return 1
    finally:
        await client.close()
    print(f"{URL}: {reply.message}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[2] if len(sys.argv) > 2 else "hello from a sender")))
