"""Newline-delimited JSON over stream sockets (TCP and UDS): the server side.

One protocol object per connection reads lines until EOF and runs the
requests of a connection concurrently, each response tagged by its uid, so
transient and persistent (multiplexed) clients are served alike.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, cast

from mypy_extensions import mypyc_attr

from ..protocol import (
    HEARTBEAT_REPLY,
    LineSplitter,
    ProtocolViolation,
    Status,
    decode_request,
    encode_error,
)
from ..routing import PreparedCall, Router
from .allow import Allowlist
from .eager import start_eagerly
from .readbuf import ReceivesIntoSharedBuffer, loop_reads_into_fresh_memory

log = logging.getLogger("ecosys.transport")

# Beyond this many unfinished requests on one connection the server stops
# reading from it until some finish: a client cannot make it buffer without bound.
MAX_IN_FLIGHT_PER_CONNECTION = 4096


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamServer:
    """Common lifecycle of the TCP and UDS servers: listen, track, drain, close."""

    kind: ClassVar[str] = "stream"  # a ClassVar: the compiled build then reads a subclass's value

    def __init__(
        self, router: Router, *, max_message_size: int, allow: Allowlist | None = None
    ) -> None:
        self.router = router
        self.allow = allow
        self.max_message_size = max_message_size
        self.connections: set[StreamServerProtocol] = set()
        self.in_flight: set[asyncio.Future[Any]] = set()  # handler tasks and commits
        self._server: asyncio.Server | None = None

    def _factory(self) -> StreamServerProtocol:
        if loop_reads_into_fresh_memory(asyncio.get_running_loop()):
            return BufferedStreamServerProtocol(self)
        return StreamServerProtocol(self)

    @property
    def address(self) -> Any:
        """The bound address (host, port) or socket path."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish within *grace* seconds, then close."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.stop_reading()
        if self.in_flight:
            done, pending = await asyncio.wait(list(self.in_flight), timeout=grace)
            # Handler tasks are cancelled; a queue commit is not: its future is
            # shared with every other waiter of the batch, and the queue's own
            # close commits it anyway.
            tasks = [task for task in pending if isinstance(task, asyncio.Task)]
            if tasks:
                log.warning("%d request(s) still running after %.1fs grace; cancelling",
                            len(tasks), grace)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            try:
                async with asyncio.timeout(1.0):  # not wait_for: it can swallow a cancellation on 3.11
                    await self._server.wait_closed()
            except TimeoutError:
                pass
            self._server = None


class StreamServerProtocol(asyncio.Protocol):
    """One server-side connection: framing, heartbeat, concurrency, back-pressure."""

    def __init__(self, server: StreamServer) -> None:
        self._server = server
        self._router = server.router
        self._max = server.max_message_size
        self._splitter = LineSplitter(server.max_message_size)
        self._transport: asyncio.Transport | None = None
        self._in_flight = 0
        self._reading_paused = False
        self._writing_paused = False
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] | None = None
        self._in_data = False
        self._write_through = False  # see data_received
        self._denied: str | None = None  # the peer's address, if not on the allowlist
        self._closed = False  # set by close(): the lines still unread are dropped
        # Calls to queued endpoints read in this data_received, stored together when it ends.
        self._storing: list[PreparedCall] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)
        allow = self._server.allow
        if allow is not None:
            peer = transport.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) else None
            if host is not None and not allow.allows(host):
                # Answered at its first request (with that request's uid, so the
                # client sees a matched ClientDenied), then disconnected.
                self._denied = host

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def eof_received(self) -> bool | None:
        unterminated = self._splitter.pending
        if unterminated:
            # Not a request (requests end with a newline), so say so; left pending,
            # these bytes would keep _close_if_drained from ever closing the connection.
            self._splitter.reset()
            self._write(encode_error(
                None, Status.PROTOCOL_ERROR,
                "the input ended in the middle of a message (no newline after its last "
                f"{unterminated} byte(s)); every message must end with a newline",
                {"unterminated_bytes": unterminated},
            ))
        # A transient client may half-close after its request: keep the write
        # side open until the pending responses are written.
        if self._in_flight:
            self._stopped = True
            return True
        # Responses gathered in this loop iteration are written before the close.
        self._flush_out()
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        lines, overflow = self._splitter.feed(data)
        # A read of one request (a caller waiting for each answer) is answered
        # the moment its handler returns, before the bookkeeping that follows;
        # the responses to a read of many are gathered into one write.
        self._write_through = len(lines) == 1 and not overflow
        self._in_data = True
        try:
            for line in lines:
                self._line_received(line)
                if self._closed:
                    return
            if overflow:
                self._reject_oversized()
        finally:
            if self._storing:
                # Also when the connection closed part way: what was read is stored.
                self._store_gathered()
            self._in_data = False
            self._write_through = False
            self._flush_out()

    def _line_received(self, line: bytes) -> None:
        # A JSON object from an allowed peer is the common case; a trailing "\r"
        # needs no stripping there (it is JSON whitespace).
        if line[:1] != b"{" or self._denied is not None:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.isspace():
                return
            if self._denied is not None:
                # A heartbeat too, as over UDP: a denied peer learns only that it is denied.
                self._deny(line)
                return
            if line == b"\x05":
                self._write(HEARTBEAT_REPLY)
                return
        prepared = self._router.prepare(line)
        if type(prepared) is bytes:
            self._write(prepared)
            return
        prepared = cast(PreparedCall, prepared)
        self._in_flight += 1
        if prepared.endpoint.stores_without_task:
            # Queued endpoints: gathered, stored with the others of this read,
            # acknowledged from a commit callback; no task at all.
            self._storing.append(prepared)
            return
        if self._storing:
            # A handler run now could itself store into a queue: what arrived before it goes first.
            self._store_gathered()
        # Every handler runs in its own task, started eagerly; only one that
        # suspended comes back, to be tracked until it finishes.
        task = start_eagerly(self._loop, self._router.serve(prepared, self._respond))
        if task is not None:
            self._track(task)

    def _store_gathered(self) -> None:
        calls, self._storing = self._storing, []
        for committed in self._router.store_many(calls, self._respond_many):
            self._track(committed)

    def _track(self, pending: asyncio.Future[Any]) -> None:
        in_flight = self._server.in_flight
        if pending not in in_flight:  # one commit can carry many requests
            in_flight.add(pending)
            pending.add_done_callback(in_flight.discard)
        if self._in_flight >= MAX_IN_FLIGHT_PER_CONNECTION:
            self._update_reading()

    def _deny(self, line: bytes) -> None:
        try:
            uid: str | None = decode_request(line).uid
        except ProtocolViolation:
            uid = None
        self._router.stats.record("endpoints", "<denied>", Status.CLIENT_DENIED, None)
        self._write(encode_error(uid, Status.CLIENT_DENIED,
                                 f"client {self._denied} is not allowed to talk to this service"))
        self.close()

    def _respond(self, line: bytes) -> None:
        self._write(line)
        self._answered(1)

    def _respond_many(self, lines: list[bytes]) -> None:
        # The acknowledgements of one commit: already one batch, so nothing is
        # gained by holding them for the next loop iteration, and a busy queue's
        # next commit waits for the requests the client sends on receiving them.
        self._write(lines[0] if len(lines) == 1 else b"".join(lines), complete=True)
        self._answered(len(lines))

    def _answered(self, count: int) -> None:
        self._in_flight -= count
        if self._reading_paused:
            self._update_reading()
        if self._stopped and not self._in_flight:
            self._close_if_drained()

    def _close_if_drained(self) -> None:
        # The peer half-closed (or we are shutting down) and everything it asked for is answered.
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._splitter.pending:
            self._flush_out()
            transport.close()

    def _write(self, payload: bytes, *, complete: bool = False) -> None:
        # Responses are gathered and sent with one write: a read of many
        # pipelined requests, or a group commit waking many handlers, costs one
        # system call instead of one per response. A payload nothing else can
        # join goes out at once when nothing is gathered: the answer to a read
        # of one request, or a *complete* batch outside a read.
        transport = self._transport
        if transport is None:
            return  # a closing transport is checked once per flush, in _flush_out
        out = self._out
        if out is None and (self._write_through or (complete and not self._in_data)):
            if not transport.is_closing():
                transport.write(payload)
            return
        if out is None:
            self._out = [payload]
            if not self._in_data:  # data_received flushes when it returns
                self._loop.call_soon(self._flush_out)
        else:
            out.append(payload)

    def _flush_out(self) -> None:
        out = self._out
        if out is None:
            return
        self._out = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        should_pause = (
            self._stopped
            or self._writing_paused
            or self._in_flight >= MAX_IN_FLIGHT_PER_CONNECTION
        )
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _reject_oversized(self) -> None:
        self._write(
            encode_error(
                None,
                Status.PROTOCOL_ERROR,
                f"message exceeds the maximum size of {self._max} bytes; closing the connection",
                {"max_message_size": self._max},
            )
        )
        self._flush_out()
        if self._transport is not None:
            self._transport.close()

    def stop_reading(self) -> None:
        """Take no more requests from this connection (used at shutdown)."""
        self._stopped = True
        self._update_reading()

    def close(self) -> None:
        """Close the connection, flushing what was written."""
        self._closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._flush_out()
            self._transport.close()


class BufferedStreamServerProtocol(
    ReceivesIntoSharedBuffer, StreamServerProtocol, asyncio.BufferedProtocol
):
    """The server connection on asyncio's own loops: receives into the shared buffer."""
