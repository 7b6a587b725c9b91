"""Durability across kill -9: what was acknowledged is processed after a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apphelpers import APPS_DIR, AppProcess, app_env, free_port, run_app, wait_until

from ecosys import EcosysError, TcpClient

QUEUE_SERVER = APPS_DIR / "queue_server.py"


def start(tmp: Path, port: int, mode: str, *, max_uncommitted: int = 0, label: str = "q",
          max_retries: int = 3) -> AppProcess:
    env = app_env(
        ECOENV_DEFAULT_DIR=tmp, ECOENV_QUEUE_DIR=tmp / "queues",
        ECOENV_EXTRA_QUEUE_SERVER_1_RECORD=tmp / "record.txt",
        ECOENV_EXTRA_QUEUE_SERVER_1_MODE=mode,
        QUEUE_MAX_UNCOMMITTED=str(max_uncommitted),
        QUEUE_COMMIT_INTERVAL="5" if max_uncommitted else "0.05",
        QUEUE_MAX_RETRIES=str(max_retries),
    )
    proc = AppProcess(QUEUE_SERVER, ["-i", "1", "--tcp", f"127.0.0.1:{port}"], env, tmp, label=label)
    proc.wait_ready()
    return proc


def recorded(tmp: Path) -> list[str]:
    path = tmp / "record.txt"
    return path.read_text().splitlines() if path.exists() else []


async def flood_until_killed(port: int, proc: AppProcess, total: int, kill_after: int) -> set[int]:
    """Send requests concurrently; kill -9 the server after *kill_after* acks; return what was acked."""
    acked: set[int] = set()
    client = TcpClient("127.0.0.1", port, retries=0, timeout=5)

    async def one(n: int) -> None:
        try:
            await client.request("work", {"n": n})
        except EcosysError:
            return
        acked.add(n)
        if len(acked) == kill_after:
            proc.kill()

    await asyncio.gather(*(one(n) for n in range(total)))
    await client.close()
    return acked


@pytest.mark.parametrize("max_uncommitted", [0, 50])
async def test_acknowledged_requests_survive_kill_9(tmp_path: Path, max_uncommitted: int) -> None:
    port = free_port()
    # Hang mode: the first request blocks the worker, so everything else stays queued.
    with start(tmp_path, port, "hang", max_uncommitted=max_uncommitted, label="first") as first:
        acked = await flood_until_killed(port, first, total=3000, kill_after=1500)
        assert first.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 1500
    (tmp_path / "record.txt").unlink(missing_ok=True)
    with start(tmp_path, port, "record", max_uncommitted=max_uncommitted, label="second") as second:
        async with TcpClient("127.0.0.1", port) as client:
            for _ in range(600):
                data = await client.request("eco.queued_handler.data", {"queue_route_key": "work"})
                if data["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
        assert second.terminate() == 0
    done = {int(x) for x in recorded(tmp_path)}
    lost = acked - done
    assert len(lost) <= max_uncommitted, f"{len(lost)} acknowledged requests lost: {sorted(lost)[:20]}"
    assert data["pending"] == 0 and data["errors"] == 0, data


async def test_request_being_handled_at_kill_is_replayed(tmp_path: Path) -> None:
    port = free_port()
    with start(tmp_path, port, "hang", label="first") as first:
        async with TcpClient("127.0.0.1", port) as client:
            assert (await client.request("work", {"n": 7}))["uid"]
        assert await asyncio.to_thread(wait_until, lambda: "start 7" in recorded(tmp_path), 10)
        first.kill()
    assert recorded(tmp_path) == ["start 7"]
    with start(tmp_path, port, "record", label="second") as second:
        assert await asyncio.to_thread(wait_until, lambda: recorded(tmp_path)[-1:] == ["7"], 10)
        assert second.terminate() == 0
    assert recorded(tmp_path) == ["start 7", "7"]


async def test_request_that_keeps_killing_the_process_is_parked(tmp_path: Path) -> None:
    port = free_port()
    # max_retries=1: two attempts. Each one "kills the process" (we kill -9 it mid-handler).
    for round_ in range(2):
        with start(tmp_path, port, "hang", max_retries=1, label=f"crash{round_}") as proc:
            if round_ == 0:
                async with TcpClient("127.0.0.1", port) as client:
                    await client.request("work", {"n": 9})
            assert await asyncio.to_thread(
                wait_until, lambda r=round_: recorded(tmp_path).count("start 9") == r + 1, 10)
            await asyncio.sleep(0.2)  # let the attempt count reach the disk (commit_interval)
            proc.kill()
    # Third start: no attempts left, so the request goes to the error queue unhandled.
    with start(tmp_path, port, "record", max_retries=1, label="third") as third:
        async with TcpClient("127.0.0.1", port) as client:
            errors: list = []
            for _ in range(100):
                errors = await client.request("eco.queued_handler.errors.get_first_10",
                                              {"queue_route_key": "work"})
                if errors:
                    break
                await asyncio.sleep(0.05)
        assert third.terminate() == 0
    assert len(errors) == 1 and errors[0]["request"] == {"n": 9} and errors[0]["attempts"] == 2
    assert "never finished" in errors[0]["reason"]
    assert recorded(tmp_path) == ["start 9", "start 9"], "the request must not run a third time"


def _queue_env(tmp: Path) -> dict[str, str]:
    return app_env(ECOENV_DEFAULT_DIR=tmp, ECOENV_QUEUE_DIR=tmp / "queues",
                   ECOENV_EXTRA_QUEUE_SERVER_1_RECORD=tmp / "record.txt",
                   ECOENV_EXTRA_QUEUE_SERVER_1_MODE="record")


def test_a_corrupt_queue_file_stops_the_start_with_one_line_naming_it(tmp_path: Path) -> None:
    pending = tmp_path / "queues" / "queue_server-1-work-endpoint-pending.sqlite"
    pending.parent.mkdir()
    garbage = bytes(range(256)) * 32
    pending.write_bytes(garbage)
    result = run_app(QUEUE_SERVER, ["-i", "1"], _queue_env(tmp_path))
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"queue_server: error: queue file {pending}: file is not a database"
    assert pending.read_bytes() == garbage, "a file that is no queue must not be overwritten"
    assert not (tmp_path / "queue_server-1.lock").exists(), "the lock is released"


def test_a_queue_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    # Made by a first run, then read-only: it opens and reads, but every commit would fail.
    with AppProcess(QUEUE_SERVER, ["-i", "1"], _queue_env(tmp_path), tmp_path, label="first") as first:
        first.wait_ready()
        assert first.terminate() == 0
    pending = tmp_path / "queues" / "queue_server-1-work-endpoint-pending.sqlite"
    pending.chmod(0o444)
    command = [sys.executable, str(QUEUE_SERVER), "-i", "1"]
    if os.geteuid() == 0:
        # root writes anyway: run without the capability that ignores file permissions.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, env=_queue_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        f"queue_server: error: queue file {pending}: attempt to write a readonly database")


async def test_a_process_that_could_not_save_acknowledged_requests_exits_1(tmp_path: Path) -> None:
    port = free_port()
    # Batching (50 uncommitted, 5 s) acknowledges before the commit; "hang" keeps
    # the worker on the first request, so the others are still pending at the stop.
    with start(tmp_path, port, "hang", max_uncommitted=50) as proc:
        async with TcpClient("127.0.0.1", port, timeout=5) as client:
            await client.request("test.fail_commits")
            for n in range(3):
                await client.request("work", {"n": n})
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 1, proc.describe()
    log_text = (tmp_path / "queue_server-1.log").read_text()
    assert "could not be written and are lost" in log_text
