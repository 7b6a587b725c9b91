"""A plain client for the echo server: send a request, print the response.

Run it:  python examples/echo/echo_client.py tcp://127.0.0.1:8888 "hello"
(also udp://127.0.0.1:8888 or uds:///tmp/ecosys/echo_server_0.uds.sock)
"""

import asyncio
import sys

from ecosys import ResponseError, TransportError, client_from_url


async def main(url: str, message: str) -> int:
    """Send one echo request to *url* and print what comes back."""
    async with client_from_url(url, timeout=5.0) as client:
        try:
            data = await client.request("echo", {"message": message})
        except (ResponseError, TransportError) as exc:
            print(f"{url}: failed: {exc}")
            return 1
    print(f"{url}: {data['message']}")
    return 0


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8888"
    text = sys.argv[2] if len(sys.argv) > 2 else "hello, ecosys"
    sys.exit(asyncio.run(main(target, text)))
