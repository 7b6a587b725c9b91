"""The RRD telemetry example: examples/telemetry/collector.py against a real dice server."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ecosys import TcpClient

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR = ROOT / "examples" / "telemetry" / "collector.py"
DICE_SERVER = ROOT / "examples" / "dice_roller" / "dice_server.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_rrdtool = pytest.mark.skipif(
    shutil.which("rrdtool") is None,
    reason="the rrdtool program is not installed "
           "(apt-get install -y --no-install-recommends rrdtool fonts-dejavu-core)",
)


def load_collector() -> ModuleType:
    spec = importlib.util.spec_from_file_location("telemetry_collector", COLLECTOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_dice_server(tmp: Path, stat_gp: int) -> tuple[asyncio.subprocess.Process, str]:
    env = dict(os.environ, ECOENV_QUEUE_DIR=str(tmp / "queues"), ECOENV_DEFAULT_DIR=str(tmp),
               ECOENV_STAT_GP=str(stat_gp), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DICE_SERVER), "-i", "rrd", "--tcp", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    found = re.search(r"tcp://127\.0\.0\.1:\d+", banner)
    assert found, f"no address in the dice server's banner: {banner!r}"
    return proc, found.group(0)


async def rrd_fetch(path: Path, source: str, start: float, end: float) -> list[float]:
    """The values of one data source, one per step; NaN where unknown."""
    proc = await asyncio.create_subprocess_exec(
        "rrdtool", "fetch", str(path), "AVERAGE", "--start", str(int(start)), "--end", str(math.ceil(end)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    column = lines[0].split().index(source)
    values = []
    for line in lines[1:]:
        if ":" in line:
            values.append(float(line.split(":", 1)[1].split()[column]))
    return values


@needs_rrdtool
async def test_collector_stores_rrds_and_draws_graphs(tmp_path: Path) -> None:
    out = tmp_path / "telemetry"
    # A 2-second statistics period: the 6-second run crosses several roll-overs.
    server, url = await start_dice_server(tmp_path, stat_gp=2)
    ghost = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there: a service that is down
    client = TcpClient("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=5)
    collector: asyncio.subprocess.Process | None = None
    try:
        began = time.time()
        collector = await asyncio.create_subprocess_exec(
            sys.executable, str(COLLECTOR), "--interval", "1", "--duration", "6", "--out", str(out),
            f"dice={url}", f"ghost={ghost}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        finished = asyncio.ensure_future(collector.communicate())
        # A steady load while the collector runs.
        rolls = 0
        while not finished.done() and time.time() - began < 20:
            await client.request("roll", {"sides": 6})
            await client.request("guess", {"sides": 6, "guess": 3})
            if rolls % 10 == 0:
                await client.request("roll_times", {"times": 20})
            rolls += 1
            await asyncio.sleep(0.05)
        rate = rolls / (time.time() - began)
        stdout, stderr = await asyncio.wait_for(finished, 20)
        ended = time.time()
    finally:
        await client.close()
        if collector is not None and collector.returncode is None:
            collector.kill()
            await collector.wait()
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 15) == 0
    log = stderr.decode()
    assert collector.returncode == 0, log

    dice = out / "dice"
    for name in ("calls.endpoints.roll", "calls.endpoints.guess", "calls.endpoints.roll_times",
                 "calls.queued_handlers.roll_times", "latency.endpoints.roll",
                 "queue.queues.endpoint.roll_times", "up"):
        assert (dice / f"{name}.rrd").is_file(), sorted(p.name for p in dice.iterdir())
    assert not list(dice.glob("*.eco.*")), "the eco.* endpoints are left out by default"
    pngs = [dice / f"{name}.png" for name in ("calls", "latency", "queues", "up")] + [out / "ghost" / "up.png"]
    for png in pngs:
        data = png.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), png
        assert str(png) in stdout.decode()
    assert (out / "index.html").is_file()

    # The service that is down was reported and polled on: UNKNOWN data, up = 0.
    assert "service ghost" in log and "does not answer" in log
    ghost_up = [v for v in await rrd_fetch(out / "ghost" / "up.rrd", "up", began, ended) if v == v]
    assert ghost_up and all(v == 0 for v in ghost_up), ghost_up
    assert not list((out / "ghost").glob("calls.*")), "a service that never answered has no call files"

    # Calls per second: close to the rate driven, with no gap although the statistics period
    # rolled over several times (the carry-over itself is checked exactly in the unit test below).
    rates = await rrd_fetch(dice / "calls.endpoints.roll.rrd", "calls", began, ended)
    known = [i for i, v in enumerate(rates) if v == v]
    assert len(known) >= 3, rates
    assert known == list(range(known[0], known[-1] + 1)), f"gap in the rates: {rates}"
    middle = [rates[i] for i in known[1:-1]] or [rates[i] for i in known]
    assert 0.4 * rate <= sum(middle) / len(middle) <= 2.5 * rate, (rate, rates)


def snapshot(uptime: float, start: float, endpoints: dict[str, Any], *, began: float = 1000.0,
             queues: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"uptime": uptime, "timestamp": began + uptime,
            "current": {"start": start, "end": None, "endpoints": endpoints, "queues": queues or {}}}


def calls(n: int, errors: dict[str, int] | None = None, p50: float | None = 0.1) -> dict[str, Any]:
    return {"calls": n, "errors": errors or {},
            "latency_ms": {"p50": p50, "p95": p50, "p99": p50, "max": p50, "mean": p50}}


def period(start: float, end: float, roll: int, errors: int = 0) -> dict[str, Any]:
    return {"start": start, "end": end, "endpoints": {"roll": calls(roll, {"300": errors} if errors else {})}}


def test_call_totals_carry_over_period_roll_overs_and_restarts() -> None:
    mod = load_collector()
    totals = mod.CallTotals()
    first = snapshot(5, 1000, {"roll": calls(5)})
    assert not totals.needs_history(first)
    assert totals.update(first) == {("endpoints", "roll"): (5, 0)}
    assert totals.update(snapshot(6, 1000, {"roll": calls(8)}))[("endpoints", "roll")] == (8, 0)
    # The period rolled over: its final count (10, one error) is added to the new one's.
    rolled = snapshot(11, 1010, {"roll": calls(2)})
    assert totals.needs_history(rolled)
    history = [period(1000, 1010, 10, errors=1)]
    assert totals.update(rolled, history)[("endpoints", "roll")] == (12, 1)
    # Two roll-overs between polls; the period already counted is not counted again.
    history += [period(1010, 1020, 4), period(1020, 1030, 3)]
    later = snapshot(31, 1030, {"roll": calls(1), "guess": calls(2)})
    assert totals.update(later, history) == {("endpoints", "roll"): (18, 1), ("endpoints", "guess"): (2, 0)}
    assert not totals.restarted
    # A restart (the statistics began at another time): the totals start again.
    again = snapshot(1, 5000, {"roll": calls(3)}, began=4999)
    assert not totals.needs_history(again)
    assert totals.update(again) == {("endpoints", "roll"): (3, 0)}
    assert totals.restarted


def test_measurements_skip_eco_endpoints_and_unknown_latency() -> None:
    mod = load_collector()
    snap = snapshot(5, 1000, {"roll": calls(5, {"300": 1}), "<unknown route>": calls(1, {"400": 1}, p50=None),
                              "eco.statistics.get": calls(3)},
                    queues={"endpoint.roll_times": {"pending": 4, "errors": 1}, "sender.out": {"error": "boom"}})
    totals = mod.CallTotals().update(snap)
    got = {(kind.name, key): values for kind, _, key, values in mod.measurements(snap, totals)}
    assert got == {
        ("calls", "<unknown route>"): (1, 1),
        ("calls", "roll"): (5, 1),
        ("latency", "roll"): (0.1, 0.1),
        ("queue", "endpoint.roll_times"): (4, 1),
        ("queue", "sender.out"): (None, None),
    }
    with_eco = {key for _, _, key, _ in mod.measurements(snap, totals, include_eco=True)}
    assert "eco.statistics.get" in with_eco


def test_names_and_arguments() -> None:
    mod = load_collector()
    assert mod.slug("roll") == "roll"
    assert re.fullmatch(r"unknown_route-[0-9a-f]{6}", mod.slug("<unknown route>"))
    assert mod.slug("a b") != mod.slug("a_b")
    assert mod.escape("roll @ tcp://h:1") == "roll @ tcp\\://h\\:1"
    assert mod.parse_service("dice=tcp://127.0.0.1:8800") == ("dice", "tcp://127.0.0.1:8800")
    assert mod.parse_service("tcp://127.0.0.1:8800") == ("127.0.0.1_8800", "tcp://127.0.0.1:8800")
    with pytest.raises(ValueError):
        mod.parse_service("dice=http://x")
    plans = mod.archives(1)
    assert "RRA:AVERAGE:0.5:1:7200" in plans and "RRA:MAX:0.5:3600:1488" in plans
    assert len(mod.archives(60)) == 4, "per-poll and per-minute archives coincide at a 60 s step"


def test_downstream_down_example_and_its_copy_in_the_docs() -> None:
    """The error-state example runs as documented, and docs/error-states.md shows it verbatim."""
    import subprocess

    script = ROOT / "examples" / "telemetry" / "downstream_down.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    down, _, up = result.stdout.partition("downstream: stored 'hello'")
    assert '"queued_sender.notes.unreachable"' in down and "ConnectFailed" in down
    assert "once it is up again: {}" in up and "delivered=1 pending=0" in up
    doc = (ROOT / "docs" / "error-states.md").read_text()
    assert f"```python\n{script.read_text()}```" in doc, "docs/error-states.md is out of date with the script"
