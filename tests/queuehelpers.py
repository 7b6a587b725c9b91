"""In-process applications with durable queues for the queue tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ecosys import Application, Registry, TcpClient


@contextlib.asynccontextmanager
async def running_app(
    registry: Registry, tmp: Path, *, name: str = "qapp", instance: str = "1", tcp: str = "127.0.0.1:0",
) -> AsyncIterator[tuple[Application, TcpClient]]:
    """Start an Application on a free TCP port with queues in *tmp*; yield it and a client."""
    app = Application(name, instance=instance, registry=registry,
                      config={"tcp": tcp, "queue_dir": str(tmp / "queues"), "default_dir": str(tmp),
                              "shutdown_grace": 2})
    await app.start()
    client = TcpClient("127.0.0.1", app.servers[0].port, timeout=5)
    try:
        yield app, client
    finally:
        await client.close()
        await app.stop()


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Await until *check()* (sync or async) returns something truthy; fail after *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
