"""Distributed tracking: one uid follows a request through client -> A -> B, into both logs.

A and B are real processes (tests/apps/chain_a.py, chain_b.py), each with its own log
directory; A reaches B through a @sender whose port comes from config.extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from apphelpers import APPS_DIR, AppProcess, app_env, free_port, socket_friendly_dir

import ecosys
from ecosys import Registry, Router, TcpClient, TcpServer, endpoint, get_uid, run_soon

UID = "5f0e7d1c-9a8b-4c3d-8e2f-1a2b3c4d5e6f"


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    with socket_friendly_dir(tmp_path) as path:
        yield path


def log_lines_with(path: Path, text: str) -> list[str]:
    assert path.exists(), f"log file {path} was not written"
    return [line for line in path.read_text().splitlines() if text in line]


async def test_uid_follows_the_request_through_a_chain(app_dir: Path) -> None:
    port_a, port_b = free_port(), free_port()
    logs_a, logs_b = app_dir / "logs_a", app_dir / "logs_b"
    env = app_env(
        ECOENV_DEFAULT_DIR=app_dir / "run",
        ECOENV_LOG_DIR_CHAIN_A=logs_a,   # application-level: each service its own log dir
        ECOENV_LOG_DIR_CHAIN_B=logs_b,
        ECOENV_EXTRA_CHAIN_A_1_B_PORT=str(port_b),
    )
    with (
        AppProcess(APPS_DIR / "chain_b.py", ["-i", "1", "--tcp", f"127.0.0.1:{port_b}"], env, app_dir,
                   label="chain_b") as b,
        AppProcess(APPS_DIR / "chain_a.py", ["-i", "1", "--tcp", f"127.0.0.1:{port_a}"], env, app_dir,
                   label="chain_a") as a,
    ):
        await asyncio.to_thread(b.wait_ready, probe_port=port_b)
        await asyncio.to_thread(a.wait_ready, probe_port=port_a)
        assert str(logs_a / "chain_a-1.log") in (a.banner or ""), a.banner
        async with TcpClient("127.0.0.1", port_a, timeout=10.0) as client:
            answer: dict[str, Any] = await client.request("forward", {"note": "first"}, uid=UID)
            assert answer["b"] == {"uid": UID, "note": "first"}, (
                f"B must see the uid the client sent to A: {answer}"
            )
            assert answer["a_uid"] == UID, f"A's handler must see the client's uid: {answer}"

            # Without an explicit uid the client makes one; it still reaches B unchanged.
            other: dict[str, Any] = await client.request("forward", {"note": "second"})
            assert other["b"]["uid"] == other["a_uid"] != UID, other

        # Stop both so the logs are flushed and closed.
        code_a = await asyncio.to_thread(a.terminate)
        code_b = await asyncio.to_thread(b.terminate)
        assert (code_a, code_b) == (0, 0), f"{a.describe()}\n{b.describe()}"

    a_lines = log_lines_with(logs_a / "chain_a-1.log", "chain A forwarding note 'first'")
    b_lines = log_lines_with(logs_b / "chain_b-1.log", "chain B handling note 'first'")
    assert a_lines and all(f"[{UID}]" in line for line in a_lines), (
        f"A's log line must carry the uid {UID}: {a_lines}"
    )
    assert b_lines and all(f"[{UID}]" in line for line in b_lines), (
        f"B's log line must carry the uid {UID}: {b_lines}"
    )
    second_uid = other["a_uid"]
    assert log_lines_with(logs_b / "chain_b-1.log", f"[{second_uid}] ")
    assert not (app_dir / "run" / "chain_a-1.log").exists(), "A's log must go to its own log dir"


# ----- in-process: tasks started by a handler ------------------------------------------


@pytest.fixture
def fresh_keeper() -> Iterator[None]:
    ecosys.default_task_keeper.reset()
    yield
    ecosys.default_task_keeper.reset()


@pytest.fixture
async def background_server(fresh_keeper: None) -> AsyncIterator[tuple[TcpServer, dict[str, Any]]]:
    """A server whose ``spawn`` endpoint starts a run_soon task that records its uid and calls ``whoami``."""
    registry = Registry()
    seen: dict[str, Any] = {"done": asyncio.Event()}
    server_box: dict[str, TcpServer] = {}

    @run_soon
    async def in_background(note: str) -> None:
        await asyncio.sleep(0.01)  # run after the handler has answered
        seen["task_uid"] = get_uid()
        async with TcpClient("127.0.0.1", server_box["server"].port, timeout=5.0) as client:
            seen["whoami_uid"] = await client.request("whoami")  # no uid given: it must propagate
        seen["note"] = note
        seen["done"].set()

    @endpoint("spawn", registry=registry)
    async def spawn() -> str:
        task = in_background("hi")
        return task.get_name()

    @endpoint("whoami", registry=registry)
    async def whoami(uid: str) -> str:
        return uid

    server = TcpServer(Router(registry), "127.0.0.1", 0)
    await server.start()
    server_box["server"] = server
    try:
        yield server, seen
    finally:
        await server.close(1.0)


async def test_run_soon_task_started_in_handler_inherits_uid(
    background_server: tuple[TcpServer, dict[str, Any]],
) -> None:
    server, seen = background_server
    async with TcpClient("127.0.0.1", server.port, timeout=5.0) as client:
        await client.request("spawn", uid=UID)
    await asyncio.wait_for(seen["done"].wait(), 5.0)
    assert seen["task_uid"] == UID, f"the run_soon task must inherit the handler's uid: {seen}"
    assert seen["whoami_uid"] == UID, f"a request sent from that task must carry the uid: {seen}"
    assert get_uid() is None, "the uid must not leak into the test's own context"
