"""Unix domain socket transport: server and client."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from typing import Any

from ..errors import ConfigurationError
from ..protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..routing import Router
from .client import StreamClient
from .stream import StreamServer


class UdsServer(StreamServer):
    """Serves the router on a Unix domain socket path; removes the file on close."""

    kind = "uds"

    def __init__(
        self, router: Router, path: str, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        super().__init__(router, max_message_size=max_message_size)
        self.path = os.path.abspath(path)
        self._identity: tuple[int, int] | None = None  # (device, inode) of the socket file we bound

    async def start(self) -> None:
        """Remove a stale socket file if nobody listens on it, then listen."""
        _remove_stale_socket(self.path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._factory, self.path, backlog=1024)
        info = os.stat(self.path)
        self._identity = (info.st_dev, info.st_ino)

    async def close(self, grace: float = 10.0) -> None:
        """Drain and close like every stream server, then remove the socket file (if still ours)."""
        await super().close(grace)
        # Only our own file: once we stopped listening, another instance may have
        # bound the path during our drain, and its file must stay.
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)

    def __repr__(self) -> str:
        return f"uds://{self.path}"


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigurationError(f"UDS path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # left behind by a process that died
            return
        raise
    finally:
        probe.close()
    raise ConfigurationError(f"UDS path {path} is in use by another process")


class UdsClient(StreamClient):
    """Client for a UDS server; persistent and multiplexed unless persistent=False."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path

    async def _open(self) -> tuple[asyncio.BaseTransport, Any]:
        loop = asyncio.get_running_loop()
        return await loop.create_unix_connection(self._protocol_factory, self.path)

    @property
    def url(self) -> str:
        """The address as a uds:// URL."""
        return f"uds://{self.path}"
