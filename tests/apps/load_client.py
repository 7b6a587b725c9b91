"""Send N requests to a route with K in flight on one persistent connection (a load generator).

Usage: load_client.py PORT ROUTE_KEY N K
"""

import asyncio
import sys

from ecosys import TcpClient


async def main(port: int, route_key: str, total: int, in_flight: int) -> None:
    """Keep *in_flight* requests outstanding until *total* were answered."""
    async with TcpClient("127.0.0.1", port, timeout=30) as client:

        async def sender(first: int) -> None:
            for n in range(first, total, in_flight):
                await client.request(route_key, {"n": n})

        await asyncio.gather(*(sender(k) for k in range(in_flight)))


if __name__ == "__main__":
    port, route_key, total, in_flight = sys.argv[1:5]
    asyncio.run(main(int(port), route_key, int(total), int(in_flight)))
