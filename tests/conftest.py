"""Shared fixtures: a fresh registry per test and real servers on loopback / UDS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import purepython  # noqa: F401  (ECOSYS_PURE=1: before ecosys is imported)
import pytest
from pydantic import BaseModel

import ecosys
from ecosys import Registry, Router, TcpServer, UdpServer, UdsServer, build, endpoint


class Echo(BaseModel):
    message: str


class Sleep(BaseModel):
    seconds: float


class Count(BaseModel):
    n: int


def build_registry() -> Registry:
    """A registry with the endpoints the transport tests talk to."""
    registry = Registry()

    @endpoint("echo", registry=registry)
    async def echo(request: Echo) -> Echo:
        return request

    @endpoint("sleep", registry=registry)
    async def sleep(request: Sleep) -> Sleep:
        await asyncio.sleep(request.seconds)
        return request

    @endpoint("boom", registry=registry)
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @endpoint("whoami", registry=registry)
    async def whoami(uid: str) -> str:
        return uid

    @endpoint("count", registry=registry)
    async def count(request: Count) -> Count:
        # A random-ish delay so that concurrent responses come back out of order.
        await asyncio.sleep((request.n * 7919 % 13) / 2000)
        return request

    @endpoint("big", registry=registry)
    async def big(request: Count) -> str:
        return "x" * request.n

    return registry


def pytest_sessionstart(session: pytest.Session) -> None:
    # A compiled module older than its edited source would be tested instead of it.
    stale = build.stale_modules()
    if stale:
        pytest.exit(f"compiled modules older than their sources: {', '.join(stale)}; "
                    "run `make compiled` to rebuild them (or `make pure` to remove them)",
                    returncode=2)


@pytest.fixture(autouse=True)
def _fresh_globals() -> None:
    ecosys.reset_default_registry()
    ecosys.default_task_keeper.reset()
    ecosys.stats.reset()
    ecosys.error_states.reset()


@pytest.fixture
def router() -> Router:
    return Router(build_registry())


@pytest.fixture
async def tcp_server(router: Router) -> AsyncIterator[TcpServer]:
    server = TcpServer(router, "127.0.0.1", 0, max_message_size=64 * 1024)
    await server.start()
    yield server
    await server.close(1.0)


@pytest.fixture
async def udp_server(router: Router) -> AsyncIterator[UdpServer]:
    server = UdpServer(router, "127.0.0.1", 0)
    await server.start()
    yield server
    await server.close(1.0)


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # UDS paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    import tempfile

    return Path(tempfile.mkdtemp(prefix="eco", dir="/tmp"))


@pytest.fixture
async def uds_server(router: Router, short_tmp: Path) -> AsyncIterator[UdsServer]:
    server = UdsServer(router, str(short_tmp / "s.sock"), max_message_size=64 * 1024)
    await server.start()
    yield server
    await server.close(1.0)
