"""Client workloads of the ping-pong benchmark and the timed measurement that drives them.

A workload is an async context manager that sets up what its workers share
(an ecosys client, or nothing for the baseline) and yields the worker
coroutine functions; every worker counts its completed round trips in one
shared :class:`Progress` and returns once ``progress.running`` turns false.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from ecosys import Client, TcpClient, UdpClient, UdsClient

# Helpers shared by every benchmark (this one runs as a script from its own folder).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from measuring import BenchError, Progress, run_for  # noqa: E402

WINDOW = 64
STOP_TIMEOUT = 5.0
NEWLINE = orjson.OPT_APPEND_NEWLINE

Worker = Callable[[Progress], Awaitable[None]]
Workload = contextlib.AbstractAsyncContextManager[list[Worker]]
StreamOpener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def measure(workload: Workload, warmup: float, seconds: float) -> float:
    """Run *workload*, skip *warmup* seconds, return round trips per second over *seconds*."""
    progress = Progress()
    async with workload as workers:
        tasks = [asyncio.ensure_future(worker(progress)) for worker in workers]
        try:
            # The window opens and closes on snapshots of a running count, so
            # connection set-up and the final drain never fall inside it.
            await run_for(tasks, warmup)
            start_count, start = progress.count, time.perf_counter()
            await run_for(tasks, seconds)
            end_count, end = progress.count, time.perf_counter()
            progress.running = False
            done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            if pending:
                raise BenchError(
                    f"{len(pending)} worker(s) still busy {STOP_TIMEOUT:g}s after stop"
                )
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return (end_count - start_count) / (end - start)



# ----- ecosys --------------------------------------------------------------


def ecosys_client(kind: str, address: Any, *, persistent: bool = True) -> Client:
    """An ecosys client with default options for *kind* ("tcp", "uds" or "udp")."""
    if kind == "tcp":
        return TcpClient(*address, persistent=persistent)
    if kind == "uds":
        return UdsClient(address, persistent=persistent)
    if kind == "udp":
        return UdpClient(*address)
    raise ValueError(f"unknown transport {kind!r}")


@contextlib.asynccontextmanager
async def ecosys_workload(client: Client, concurrency: int) -> AsyncIterator[list[Worker]]:
    """*concurrency* coroutines calling "ping" one after another on one shared *client*."""
    try:
        yield [lambda progress: _ecosys_worker(client, progress)] * concurrency
    finally:
        await client.close()


async def _ecosys_worker(client: Client, progress: Progress) -> None:
    request = client.request
    seq = 0
    while progress.running:
        reply = await request("ping", {"seq": seq})
        if reply["seq"] != seq:
            raise BenchError(f"ecosys answered seq {reply['seq']!r} to seq {seq}")
        seq += 1
        progress.count += 1


# ----- baseline: newline JSON over asyncio streams ---------------------------


def tcp_opener(host: str, port: int) -> StreamOpener:
    """Open an asyncio stream connection to host:port."""
    return lambda: asyncio.open_connection(host, port)


def uds_opener(path: str) -> StreamOpener:
    """Open an asyncio stream connection to a Unix socket."""
    return lambda: asyncio.open_unix_connection(path)


@contextlib.asynccontextmanager
async def workers_of(worker: Worker, count: int = 1) -> AsyncIterator[list[Worker]]:
    """A workload of *count* copies of a self-contained *worker*."""
    yield [worker] * count


async def baseline_sequential(open_stream: StreamOpener, progress: Progress) -> None:
    """One connection; write a line, read the answer, repeat."""
    reader, writer = await open_stream()
    dumps, loads = orjson.dumps, orjson.loads
    seq = 0
    try:
        while progress.running:
            writer.write(dumps({"seq": seq}, option=NEWLINE))
            await writer.drain()
            reply = loads(await reader.readline())
            if reply["seq"] != seq:
                raise BenchError(f"baseline answered seq {reply['seq']!r} to seq {seq}")
            seq += 1
            progress.count += 1
    finally:
        writer.close()


async def baseline_pipelined(open_stream: StreamOpener, progress: Progress) -> None:
    """One connection with WINDOW requests outstanding: each answer read sends the next request."""
    reader, writer = await open_stream()
    dumps, loads = orjson.dumps, orjson.loads
    sent = received = 0
    try:
        for _ in range(WINDOW):
            writer.write(dumps({"seq": sent}, option=NEWLINE))
            sent += 1
        # No drain in the loop: at most WINDOW lines are ever buffered.
        await writer.drain()
        while received < sent:
            reply = loads(await reader.readline())
            if reply["seq"] != received:
                raise BenchError(f"baseline answered seq {reply['seq']!r}, expected {received}")
            received += 1
            progress.count += 1
            if progress.running:
                writer.write(dumps({"seq": sent}, option=NEWLINE))
                sent += 1
    finally:
        writer.close()


async def baseline_transient(open_stream: StreamOpener, progress: Progress) -> None:
    """A new connection per request: connect, write, read, close."""
    dumps, loads = orjson.dumps, orjson.loads
    seq = 0
    while progress.running:
        reader, writer = await open_stream()
        try:
            writer.write(dumps({"seq": seq}, option=NEWLINE))
            await writer.drain()
            reply = loads(await reader.readline())
        finally:
            # Not awaiting wait_closed(): ecosys's transient client does not wait either.
            writer.close()
        if reply["seq"] != seq:
            raise BenchError(f"baseline answered seq {reply['seq']!r} to seq {seq}")
        seq += 1
        progress.count += 1


# ----- baseline: one JSON object per UDP datagram -----------------------------


class _UdpWaiter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


async def baseline_udp_sequential(host: str, port: int, progress: Progress) -> None:
    """One UDP socket; send a datagram, wait for the answer, repeat."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _UdpWaiter, remote_addr=(host, port)
    )
    dumps, loads = orjson.dumps, orjson.loads
    seq = 0
    try:
        while progress.running:
            protocol.waiter = loop.create_future()
            transport.sendto(dumps({"seq": seq}))
            reply = loads(await protocol.waiter)
            if reply["seq"] != seq:
                raise BenchError(f"baseline answered seq {reply['seq']!r} to seq {seq}")
            seq += 1
            progress.count += 1
    finally:
        transport.close()


class _UdpWindow(asyncio.DatagramProtocol):
    """Keeps WINDOW datagrams outstanding: every answer received sends the next request."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.outstanding = 0
        self.drained = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        assert self.transport is not None
        self.transport.sendto(orjson.dumps({"seq": self.sent}))
        self.sent += 1
        self.outstanding += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        seq = orjson.loads(data)["seq"]
        if not (type(seq) is int and 0 <= seq < self.sent):
            self._fail(BenchError(f"baseline answered seq {seq!r}, never sent"))
            return
        self.outstanding -= 1
        self.progress.count += 1
        if self.progress.running:
            self.send()
        elif not self.outstanding and not self.drained.done():
            self.drained.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if not self.drained.done():
            self.drained.set_exception(exc)


async def baseline_udp_window(host: str, port: int, progress: Progress) -> None:
    """One UDP socket with WINDOW requests outstanding."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UdpWindow(progress), remote_addr=(host, port)
    )
    try:
        for _ in range(WINDOW):
            protocol.send()
        await protocol.drained
    finally:
        transport.close()
