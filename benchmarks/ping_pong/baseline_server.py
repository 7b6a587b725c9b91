"""The baseline of the ping-pong benchmark: a minimal newline-JSON echo server on plain asyncio.

Per line: readline, orjson decode, orjson encode, write. Per UDP datagram:
decode, encode, sendto. No envelope, no validation, no task per request: the
least any JSON-over-asyncio server has to do, so ecosys is measured against it.

Usage: baseline_server.py --tcp HOST:PORT --udp HOST:PORT --uds PATH --event_loop asyncio|uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from typing import Any

import orjson
from parent_watch import stop_when_parent_exits

NEWLINE = orjson.OPT_APPEND_NEWLINE


async def echo_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every line of one connection with the same JSON, until EOF."""
    dumps, loads = orjson.dumps, orjson.loads
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(dumps(loads(line), option=NEWLINE))
            await writer.drain()
    except (ConnectionError, orjson.JSONDecodeError):
        pass
    finally:
        writer.close()


class EchoDatagrams(asyncio.DatagramProtocol):
    """Answer every datagram with the same JSON."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.transport.sendto(orjson.dumps(orjson.loads(data)), addr)
        except orjson.JSONDecodeError:
            pass


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT."""
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args: argparse.Namespace) -> None:
    """Listen on UDP, TCP and UDS until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    udp, _ = await loop.create_datagram_endpoint(EchoDatagrams, local_addr=host_port(args.udp))
    tcp = await asyncio.start_server(echo_lines, *host_port(args.tcp), backlog=1024)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.uds)
    uds = await asyncio.start_unix_server(echo_lines, args.uds, backlog=1024)
    print(f"baseline listening on tcp {args.tcp}, udp {args.udp}, uds {args.uds}", flush=True)
    try:
        await stop.wait()
    finally:
        udp.close()
        for server in (tcp, uds):
            server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.uds)


def main() -> None:
    """Parse the flags and serve on the chosen event loop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tcp", required=True, metavar="HOST:PORT")
    parser.add_argument("--udp", required=True, metavar="HOST:PORT")
    parser.add_argument("--uds", required=True, metavar="PATH")
    parser.add_argument("--event_loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    factory = None
    if args.event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    stop_when_parent_exits()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
