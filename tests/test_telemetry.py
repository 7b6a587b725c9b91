"""Statistics keeper and error state keeper, through the standard endpoints over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from queuehelpers import eventually, running_app

from ecosys import (
    Registry,
    TcpClient,
    backoff,
    endpoint,
    error_states,
    queued_endpoint,
    queued_sender,
    stats,
)
from ecosys.telemetry.stats import CallStats, StatisticsKeeper, nest


class Nap(BaseModel):
    ms: float


def nap_registry() -> Registry:
    registry = Registry()

    @endpoint("nap", registry=registry)
    async def nap(request: Nap) -> None:
        await asyncio.sleep(request.ms / 1000)

    @endpoint("fail", registry=registry)
    async def fail() -> None:
        raise RuntimeError("no")

    @queued_endpoint("later", registry=registry)
    async def later(request: Nap) -> bool:
        return True

    return registry


async def test_counts_errors_and_queue_sizes(tmp_path: Path) -> None:
    async with running_app(nap_registry(), tmp_path) as (_, client):
        for _ in range(25):
            await client.request("nap", {"ms": 0})
        for _ in range(3):
            await client.send("fail")
        await client.send("nap", {"ms": "x"})
        await client.send("no.such.route")
        await client.request("later", {"ms": 1})
        snap = await client.request("eco.statistics.get", {"type": "current"})
    current = snap["current"]
    assert snap["uptime"] >= 0 and snap["timestamp"] > 0
    assert current["endpoints"]["nap"]["calls"] == 26
    assert current["endpoints"]["nap"]["errors"] == {"300": 1}
    assert current["endpoints"]["fail"] == {**current["endpoints"]["fail"], "calls": 3, "errors": {"600": 3}}
    assert current["endpoints"]["<unknown route>"]["errors"] == {"400": 1}
    assert current["endpoints"]["later"]["calls"] == 1
    assert set(current["queues"]) == {"endpoint.later"}
    assert {"pending", "errors"} <= set(current["queues"]["endpoint.later"])
    # The client side records what it sent, per target.
    sent = stats.current.groups["senders"]
    assert any(key.startswith("nap @ tcp://") and v.calls == 26 for key, v in sent.items())


async def test_latency_percentiles_follow_known_sleeps(tmp_path: Path) -> None:
    async with running_app(nap_registry(), tmp_path) as (_, client):
        # 90 fast calls and 10 calls of 100 ms: p50 is fast, p95/p99/max are ~100 ms.
        for _ in range(90):
            await client.request("nap", {"ms": 1})
        await asyncio.gather(*(client.request("nap", {"ms": 100}) for _ in range(10)))
        snap = await client.request("eco.statistics.get", {})
    latency = snap["current"]["endpoints"]["nap"]["latency_ms"]
    assert 1 <= latency["p50"] < 20, latency
    assert 95 <= latency["p95"] <= 160, latency
    assert 95 <= latency["p99"] <= 160 and 100 <= latency["max"] < 200, latency


def test_histogram_percentiles_within_five_percent() -> None:
    calls = CallStats()
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s
    for value in values:
        calls.record(0, value)
    for fraction, expected in ((0.5, 0.5), (0.95, 0.95), (0.99, 0.99)):
        got = calls.percentile(fraction)
        assert got is not None and abs(got - expected) / expected <= 0.05, (fraction, got)
    assert calls.max == 1.0


async def test_gathered_and_full_history_capped(tmp_path: Path) -> None:
    registry = nap_registry()
    app_config = {"stat_gp": 1, "stat_hl": 2}
    from ecosys import Application

    app = Application("statapp", instance="1", registry=registry,
                      config={"tcp": "127.0.0.1:0", "default_dir": str(tmp_path),
                              "queue_dir": str(tmp_path / "q"), **app_config})
    await app.start()
    client = TcpClient("127.0.0.1", app.servers[0].port)
    try:
        for _ in range(4):
            await client.request("nap", {"ms": 0})
        first = await eventually(lambda: _gathered(client), timeout=3)
        assert first["endpoints"]["nap"]["calls"] == 4
        assert first["end"] - first["start"] == pytest.approx(1, abs=0.3)
        await asyncio.sleep(2.2)  # two more periods roll over
        full = await client.request("eco.statistics.get", {"type": "full"})
        assert len(full["history"]) == 2, "history is capped at stat_hl"
        assert all(p["end"] > p["start"] for p in full["history"])
        with pytest.raises(Exception, match="300"):
            await client.request("eco.statistics.get", {"type": "weekly"})
    finally:
        await client.close()
        await app.stop()


async def _gathered(client: TcpClient) -> dict | None:
    snap = await client.request("eco.statistics.get", {"type": "gathered"})
    return snap["gathered"]  # type: ignore[no-any-return]


def test_custom_statistics_nest_and_count() -> None:
    keeper = StatisticsKeeper()
    keeper.set("orders.open", 3)
    keeper.increment("orders.filled")
    keeper.increment("orders.filled", 4)
    keeper.decrement("orders.open")
    keeper.decrement("orders.open", 0.5)
    keeper.set("uptime_note", "fine")
    custom = keeper.snapshot()["current"]["custom"]
    assert custom == {"orders": {"open": 1.5, "filled": 5}, "uptime_note": "fine"}
    assert nest({"a": 1, "a.b": 2}) == {"a": {"_": 1, "b": 2}}
    keeper.rotate()
    assert keeper.snapshot("gathered")["gathered"]["custom"]["orders"]["filled"] == 5


async def test_error_states_through_endpoints(tmp_path: Path) -> None:
    async with running_app(nap_registry(), tmp_path) as (_, client):
        error_states.raise_state("disk.full", "disk at 99%")
        error_states.raise_state("disk.full")
        error_states.raise_state("feed.stale", "no prices for 60 s")
        states = await client.request("eco.error_states.get")
        assert states["disk.full"]["count"] == 2 and states["disk.full"]["description"] == "disk at 99%"
        assert await client.request("eco.error_states.clear", {"names": ["disk.full", "nope"]}) == {"cleared": ["disk.full"]}
        assert list(await client.request("eco.error_states.get")) == ["feed.stale"]
        assert await client.request("eco.error_states.clear", {}) == {"cleared": ["feed.stale"]}
        assert await client.request("eco.error_states.get") == {}


async def test_unreachable_target_raises_and_clears_error_state(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = Registry()
    target_client = TcpClient("127.0.0.1", port, retries=0, timeout=1)

    @queued_sender(target_client, "nap", name="downstream", registry=registry, backoff=backoff.constant(0.05))
    def send(ms: float) -> Nap:
        return Nap(ms=ms)

    async with running_app(registry, tmp_path) as (app, client):
        await send(0)
        states = await eventually(lambda: client.request("eco.error_states.get"))
        assert "queued_sender.downstream.unreachable" in states
        assert f"127.0.0.1:{port}" in states["queued_sender.downstream.unreachable"]["description"]
        # What an operator sees with the eco tool, in a table and as JSON.
        target = f"tcp://127.0.0.1:{app.servers[0].port}"
        table = await eco("errors", "get", target)
        assert table.returncode == 0 and "queued_sender.downstream.unreachable" in table.stdout
        as_json = await eco("errors", "get", target, "--json")
        assert "queued_sender.downstream.unreachable" in json.loads(as_json.stdout)
        # The target comes up: the message goes through and the state clears itself.
        from ecosys import Router, TcpServer

        server = TcpServer(Router(nap_registry()), "127.0.0.1", port)
        await server.start()
        try:
            await eventually(lambda: _no_states(client), timeout=5)
            assert json.loads((await eco("errors", "get", target, "--json")).stdout) == {}
        finally:
            await server.close(1)


async def eco(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the eco command in a thread, so the in-process service keeps serving."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ecosys.cli", *args],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "COLUMNS": "200"},  # wide enough that table cells do not wrap
    )


async def _no_states(client: TcpClient) -> bool:
    return await client.request("eco.error_states.get") == {}


def test_nesting_never_writes_into_a_custom_value() -> None:
    from ecosys.telemetry.stats import nest

    mine = {"x": 1}
    nested = nest({"orders": mine, "orders.open": 2})
    assert mine == {"x": 1}, "nest() wrote into the caller's dict"
    assert nested == {"orders": {"_": {"x": 1}, "open": 2}}


async def test_one_application_stopping_leaves_the_others_periods_rolling() -> None:
    from ecosys.telemetry.stats import StatisticsKeeper

    keeper = StatisticsKeeper(gathering_period=0.1)
    keeper.start()
    keeper.start()  # a second application in the same process
    await keeper.stop()  # the first one stops
    await asyncio.sleep(0.35)
    assert len(keeper.history) >= 2, "periods stopped rolling over for the application still running"
    await keeper.stop()
    assert keeper._task is None
    keeper.reset()
    assert keeper.gathering_period == 300.0 and keeper.history.maxlen == 12


def test_calls_counted_together_weigh_as_many_as_counted_one_by_one() -> None:
    from ecosys.telemetry.stats import CallStats

    together, one_by_one = CallStats(), CallStats()
    together.record(0, 0.002, 5)
    together.record(500, 0.010, 2)
    for _ in range(5):
        one_by_one.record(0, 0.002)
    for _ in range(2):
        one_by_one.record(500, 0.010)
    assert together.describe() == one_by_one.describe()
    assert together.calls == 7 and together.errors == {500: 2}
