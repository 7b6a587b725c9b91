"""UDP transport: one JSON object per datagram, server and client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import ClientClosed, ConnectFailed, ConnectionLost
from ..protocol import (
    HEARTBEAT_REPLY,
    ProtocolViolation,
    Response,
    Status,
    decode_request,
    decode_response,
    encode_error,
)
from ..routing import PreparedCall, Router
from .allow import Allowlist
from .client import Client, Lanes, ResponseMatcher, address_url
from .eager import start_eagerly

log = logging.getLogger("ecosys.transport")

# The largest payload an IPv4 UDP datagram can carry.
MAX_DATAGRAM = 65507


class UdpServer(asyncio.DatagramProtocol):
    """Serves the router on a UDP host and port; each datagram is one request."""

    kind = "udp"

    def __init__(
        self, router: Router, host: str, port: int, *, allow: Allowlist | None = None, **_: Any
    ) -> None:
        self.router = router
        self.allow = allow
        self.host = host
        self.port = port
        self.in_flight: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._accepting = True
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind the socket."""
        loop = self._loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    @property
    def address(self) -> Any:
        """The bound (host, port)."""
        return None if self._transport is None else self._transport.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self._accepting:
            return
        if self.allow is not None and not self.allow.allows(addr[0]):
            try:
                uid: str | None = decode_request(data.rstrip(b"\n")).uid
            except ProtocolViolation:
                uid = None
            self.router.stats.record("endpoints", "<denied>", Status.CLIENT_DENIED, None)
            self._send(encode_error(uid, Status.CLIENT_DENIED,
                                    f"client {addr[0]} is not allowed to talk to this service"), addr)
            return
        if data.endswith(b"\n"):
            data = data[:-1]
        if data == b"\x05":
            self._send(HEARTBEAT_REPLY, addr)
            return
        prepared = self.router.prepare(data)
        if type(prepared) is bytes:
            self._send(prepared, addr)
            return
        assert isinstance(prepared, PreparedCall) and self._loop is not None
        task = start_eagerly(self._loop, self._run(prepared, addr))
        if task is not None:
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _run(self, call: PreparedCall, addr: Any) -> None:
        self._send(await self.router.run(call), addr, call.uid)

    def _send(self, payload: bytes, addr: Any, uid: str | None = None) -> None:
        if len(payload) > MAX_DATAGRAM:
            log.error("response of %d bytes does not fit in a datagram", len(payload))
            payload = encode_error(
                uid, Status.PROCESSING_FAILURE,
                f"response of {len(payload)} bytes is too large for UDP; use TCP or UDS",
            )
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(payload, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking datagrams, let running requests finish within *grace*, then close."""
        self._accepting = False
        if self.in_flight:
            _, pending = await asyncio.wait(list(self.in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def __repr__(self) -> str:
        return address_url("udp", self.host, self.port)


class _UdpClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: Client) -> None:
        self.matcher = ResponseMatcher()
        self.transport: asyncio.DatagramTransport | None = None
        # Its settings are read when needed: a client's retry_on_timeout changed
        # while its socket is open applies at once.
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            response = decode_response(data.rstrip(b"\n"))
        except ProtocolViolation as exc:
            log.warning("dropping invalid UDP response: %s", exc.message)
            return
        self.matcher.deliver(response)

    def send(self, uid: str, payload: bytes) -> None:
        """Send one request datagram (the matcher's write callback)."""
        if self.transport is None:
            raise ConnectFailed("UDP socket closed")
        self.transport.sendto(payload)

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket the ICMP "port unreachable" arrives here. It
        # refuses one datagram, and does not say which: alone in flight, that is
        # this request's, which surely was not processed (safe to retry). With
        # others in flight, any of them may have reached the server before it
        # went away: as uncertain as a timeout, so retried only if timeouts are.
        reason = f"UDP peer unreachable: {exc}"
        # Answered requests whose callers have not resumed yet do not count.
        waiting = sum(1 for future in self.matcher.pending.values() if not future.done())
        if waiting <= 1 or self._client.retry_on_timeout:
            self.matcher.fail_all(ConnectFailed(reason))
        else:
            self.matcher.fail_all(ConnectionLost(f"{reason}; the request may have been processed"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        # Requests already sent may have been processed: not ConnectFailed (retried).
        if exc is None:
            self.matcher.fail_all(ClientClosed("the client was closed while waiting for a response"))
        else:
            self.matcher.fail_all(ConnectionLost(f"UDP socket failed while waiting for a response: {exc}"))


class UdpClient(Client):
    """Client for a UDP server; many requests in flight on one socket, matched by uid.

    Datagrams can be lost, so timeouts are retried by default (set
    ``retry_on_timeout=False`` for requests that must not run twice).
    """

    def __init__(self, host: str, port: int, *, retry_on_timeout: bool = True, **options: Any) -> None:
        options.setdefault("max_message_size", MAX_DATAGRAM - 1)
        options.setdefault("timeout", 2.0)
        super().__init__(retry_on_timeout=retry_on_timeout, **options)
        self.host = host
        self.port = port
        self._protocol: _UdpClientProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._lanes: Lanes[_UdpClientProtocol] = Lanes()  # extra sockets for busy uids

    @property
    def url(self) -> str:
        """The address as a udp:// URL."""
        return address_url("udp", self.host, self.port)

    async def _endpoint(self) -> _UdpClientProtocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._protocol, self._lock = loop, None, asyncio.Lock()
            self._lanes = Lanes()  # bound to the old loop, like the shared socket
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        assert self._lock is not None
        async with self._lock:
            if self._protocol is None or self._protocol.transport is None:
                self._protocol = await self._open_socket()
            return self._protocol

    async def _open_socket(self) -> _UdpClientProtocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpClientProtocol(self), remote_addr=(self.host, self.port))
        except OSError as exc:
            raise ConnectFailed(f"cannot open UDP socket to {self.url}: {exc}") from exc
        return protocol

    async def _exchange(self, uid: str, payload: bytes, timeout: float) -> Response:
        protocol = await self._endpoint()
        assert self._loop is not None
        if self._lanes.shared_will_do(uid, protocol):
            # The common case, without a coroutine more: nothing else carries this uid.
            return await protocol.matcher.wait(self._loop, uid, protocol.send, payload, timeout)
        self._lanes.keep_only(lambda lane: lane.transport is not None)
        # The same uid in flight on the shared socket: an extra socket (see Lanes).
        target = await self._lanes.connection_for(uid, protocol, self._socket_unless_closed,
                                                  self._endpoint)
        return await target.matcher.wait(self._loop, uid, target.send, payload, timeout)

    async def _socket_unless_closed(self) -> _UdpClientProtocol:
        """A new socket, or ClientClosed if close() came while it was being opened."""
        generation = self._generation
        protocol = await self._open_socket()
        if generation != self._generation:
            assert protocol.transport is not None
            protocol.transport.close()  # nothing may be sent on it now
            raise ClientClosed("the client was closed while waiting for a response")
        return protocol

    async def close(self) -> None:
        """Close the socket."""
        self._generation += 1
        for lane in self._lanes.take_all():
            if lane.transport is not None:
                lane.transport.close()  # its requests fail with ClientClosed
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
