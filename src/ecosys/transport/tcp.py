"""TCP transport: server and client."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..routing import Router
from .allow import Allowlist
from .client import StreamClient, address_url
from .stream import StreamServer


class TcpServer(StreamServer):
    """Serves the router on a TCP host and port (port 0 picks a free one)."""

    kind = "tcp"

    def __init__(
        self, router: Router, host: str, port: int, *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, allow: Allowlist | None = None,
    ) -> None:
        super().__init__(router, max_message_size=max_message_size, allow=allow)
        self.host = host
        self.port = port

    async def start(self) -> None:
        """Bind and start listening."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self.host, self.port, reuse_address=True, backlog=1024
        )
        for sock in self._server.sockets:
            # Half-open peers that never send again are found by the OS too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.port = self._server.sockets[0].getsockname()[1]

    def __repr__(self) -> str:
        return address_url("tcp", self.host, self.port)


class TcpClient(StreamClient):
    """Client for a TCP server; persistent and multiplexed unless persistent=False."""

    def __init__(self, host: str, port: int, **options: Any) -> None:
        super().__init__(**options)
        self.host = host
        self.port = port

    async def _open(self) -> tuple[asyncio.BaseTransport, Any]:
        loop = asyncio.get_running_loop()
        return await loop.create_connection(self._protocol_factory, self.host, self.port)

    @property
    def url(self) -> str:
        """The address as a tcp:// URL."""
        return address_url("tcp", self.host, self.port)
