"""The Fun Factory system: real service processes on Unix sockets, a real client, kill -9 and all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

FUN_FACTORY = Path(__file__).resolve().parent.parent / "examples" / "fun_factory"
sys.path.insert(0, str(FUN_FACTORY))

from fun_client import drive  # noqa: E402
from fun_system import FunFactory  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains *text*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def services_of(run_dir: Path) -> list[int]:
    """Live service processes of a demo (their --uds path is under its run directory)."""
    return processes_mentioning(str(run_dir / "sock"))


def pid_alive(pid: int) -> bool:
    """Whether *pid* is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_kill_9_tracker_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    factory = FunFactory(tmp_path / "run")
    await factory.start()
    try:
        driving = asyncio.create_task(drive(factory.router_url, rate=60, duration=6, seed=7))
        await asyncio.sleep(2.0)
        first_pid = factory.services["tracker"].process.pid  # type: ignore[union-attr]
        factory.kill("tracker")
        await asyncio.sleep(0.8)
        # While the tracker is dead the router keeps answering; its records wait on disk.
        waiting = await factory.call("router", "eco.queued_sender.data", {"queue_route_key": "to_tracker"})
        assert waiting is not None and waiting["pending"] > 0, waiting
        await factory.start_service("tracker")
        assert factory.services["tracker"].process.pid != first_pid  # type: ignore[union-attr]
        result = await driving
        assert await factory.wait_drained(30.0)
        tracked = await factory.tracked_uids()
        codes = await factory.stop()
    finally:
        await factory.stop()

    assert result.sent == 360 and not result.lost and result.skipped == 0
    assert result.ok > 300
    # Every message the router answered (status 0 or an error it passed on) is tracked once.
    assert sorted(tracked) == sorted(result.answered)
    db = sqlite3.connect(factory.database)
    rows = db.execute("SELECT uid, status FROM messages").fetchall()
    db.close()
    assert len(rows) == len({uid for uid, _ in rows}) == len(result.answered)
    assert {uid: status for uid, status in rows} == result.answered
    assert codes == dict.fromkeys(codes, 0)


async def test_one_uid_follows_a_message_through_every_log(tmp_path: Path) -> None:
    factory = FunFactory(tmp_path / "run")
    await factory.start()
    try:
        result = await drive(factory.router_url, rate=40, duration=1.5, seed=3)
        assert await factory.wait_drained(20.0)
        tracked = set(await factory.tracked_uids())
    finally:
        await factory.stop()
    answered_ok = [uid for uid, status in result.answered.items() if status == 0]
    assert answered_ok and set(result.answered) == tracked
    router_log = factory.services["router"].log.read_text()
    tracker_log = factory.services["tracker"].log.read_text()
    for uid in answered_ok[:10]:
        line = next(line for line in router_log.splitlines() if f"[{uid}]" in line)
        service = re.search(r"\] (\w+) answered", line).group(1)  # type: ignore[union-attr]
        assert f"[{uid}]" in factory.services[service].log.read_text()
        assert f"[{uid}] tracked" in tracker_log


async def test_a_service_that_answers_an_error_is_tracked_with_its_status(tmp_path: Path) -> None:
    factory = FunFactory(tmp_path / "run")
    await factory.start()
    try:
        client = factory.client("router")
        good = await client.send("router.ask", {"topic": "eight_ball", "text": "Is it done?"})
        refused = await client.send("router.ask", {"topic": "eight_ball", "text": "It is done."})
        bad_zone = await client.send("router.ask", {"topic": "time", "text": "Mars/Olympus_Mons"})
        unknown = await client.send("router.ask", {"topic": "weather"})
        factory.kill("joker")
        await asyncio.sleep(0.2)
        joker_down = await client.send("router.ask", {"topic": "joke"})
        assert await factory.wait_drained(20.0)
        tracked = await factory.tracked_uids()
    finally:
        await factory.stop()
    assert good.status == 0 and good.data["service"] == "magic_eight_ball"
    assert refused.status == 300 and "magic_eight_ball" in refused.data["message"]
    assert bad_zone.status == 300 and "Mars/Olympus_Mons" in bad_zone.data["message"]
    assert unknown.status == 300  # the router's own model refuses the topic: nothing to track
    assert joker_down.status == 500 and "joker is unavailable" in joker_down.data["message"]
    assert set(tracked) == {good.uid, refused.uid, bad_zone.uid, joker_down.uid}


def run_demo(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(FUN_FACTORY / "run.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "160"}, **kwargs)  # type: ignore[call-overload]


def test_demo_runs_summarizes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    demo = run_demo("--duration", "3", "--rate", "30", "--run-dir", str(run_dir))
    output, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, output
    pids = [int(p) for p in re.findall(r"started \w+ +pid (\d+)", output)]
    assert len(pids) == 7, output
    assert "demo OK" in output and "all exited 0" in output
    assert re.search(r"answered\s+│?\s*90 \(", output), output
    assert "tracked" in output and "all answered messages" in output
    assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms", output)
    assert not [pid for pid in pids if pid_alive(pid)]
    assert services_of(run_dir) == []


def test_ctrl_c_stops_every_service(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    demo = run_demo("--duration", "60", "--rate", "20", "--run-dir", str(run_dir))
    assert demo.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in demo.stdout:
        lines.append(line)
        if line.startswith("sending ") or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    assert len(services_of(run_dir)) == 7, "".join(lines)
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, "".join(lines) + rest
    assert "stopped every service, all exited 0" in rest
    assert services_of(run_dir) == []


def test_demo_names_the_service_that_failed_to_start_and_stops_the_rest(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    # A directory where the joker's socket should go: its server cannot bind.
    (run_dir / "sock" / "joker.sock").mkdir(parents=True)
    (run_dir / "sock" / "joker.sock" / "keep").write_text("in the way")
    demo = run_demo("--duration", "5", "--run-dir", str(run_dir))
    output, _ = demo.communicate(timeout=120)
    assert demo.returncode == 1, output
    assert "joker failed to start" in output, output
    assert "stopped the services that had started" in output
    assert services_of(run_dir) == []


def test_a_demo_killed_with_sigkill_takes_its_services_with_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    demo = run_demo("--duration", "60", "--rate", "5", "--run-dir", str(run_dir))
    assert demo.stdout is not None
    for line in demo.stdout:
        if line.startswith("sending "):
            break
    assert len(services_of(run_dir)) == 7
    demo.kill()
    demo.wait(timeout=10)
    deadline = time.monotonic() + 20
    while services_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert services_of(run_dir) == []
