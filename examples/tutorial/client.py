"""The tutorial's client: a welcome, a guestbook signature, then the guestbook.

Run it:  python examples/tutorial/client.py [tcp://127.0.0.1:8800] [name]
"""

from __future__ import annotations

import asyncio
import sys

from ecosys import ResponseError, TransportError, client_from_url


async def main(url: str, name: str) -> int:
    """Talk to the front at *url*; return the exit code."""
    async with client_from_url(url, timeout=5.0) as front:
        try:
            welcome = await front.request("front.welcome", {"name": name})
            print(f"{welcome['text']} (uid {welcome['uid']})")
            queued = await front.request("front.sign", {"name": name})
            print(f"signature queued as uid {queued['uid']} ({queued['pending']} waiting)")
            # The greeter gets the signature a moment later, in the background: wait for it.
            for _ in range(50):
                names = await front.request("front.guestbook")
                if name in names:
                    break
                await asyncio.sleep(0.1)
        except (ResponseError, TransportError) as exc:
            print(f"{url}: {exc}")
            return 1
    print(f"guestbook: {', '.join(names)}")
    return 0 if name in names else 1


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8800"
    sys.exit(asyncio.run(main(url, sys.argv[2] if len(sys.argv) > 2 else "Ada")))
