"""What the queue benchmark measures: client workloads, sender deliveries, raw sqlite3 inserts."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic_core
from models import Order, order

from ecosys import UdsClient, new_uid

# Helpers shared by every benchmark (this one runs as a script from its own folder).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from measuring import BenchError, Progress, run_for  # noqa: E402

STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.005


# ----- N coroutines sharing one persistent UdsClient --------------------------------

Check = Callable[[Any, str, int], None]


def check_queued(reply: Any, uid: str, seq: int) -> None:
    """A queued endpoint acknowledges with the request's uid."""
    if reply != {"uid": uid}:
        raise BenchError(f"queued endpoint answered {reply!r} to uid {uid}")


def check_echo(reply: Any, uid: str, seq: int) -> None:
    """The plain endpoint returns the request."""
    if type(reply) is not dict or reply.get("seq") != seq:
        raise BenchError(f"echo answered {reply!r} to seq {seq}")


async def _worker(client: UdsClient, route: str, check: Check, seqs: Any, progress: Progress) -> None:
    request = client.request
    while progress.running:
        seq = next(seqs)
        uid = new_uid()
        check(await request(route, order(seq), uid=uid), uid, seq)
        progress.count += 1



async def measure_requests(
    uds: str, route: str, check: Check, concurrency: int, warmup: float, seconds: float
) -> tuple[float, int]:
    """*concurrency* coroutines call *route* in a loop on one shared persistent UdsClient.

    Returns (answered requests per second over the *seconds* window after
    *warmup*, all requests answered including warm-up and the final drain).
    """
    client = UdsClient(uds, timeout=30.0)
    progress = Progress()
    seqs = itertools.count()
    tasks = [asyncio.ensure_future(_worker(client, route, check, seqs, progress))
             for _ in range(concurrency)]
    try:
        # Counting runs across the window's edges: connecting and draining stay outside it.
        await run_for(tasks, warmup)
        start_count, start = progress.count, time.perf_counter()
        await run_for(tasks, seconds)
        end_count, end = progress.count, time.perf_counter()
        progress.running = False
        done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        if pending:
            raise BenchError(f"{len(pending)} worker(s) still busy {STOP_TIMEOUT:g}s after stop")
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return (end_count - start_count) / (end - start), progress.count


async def call(uds: str, route: str, data: Any = None, timeout: float = 30.0) -> Any:
    """One request on a fresh client."""
    async with UdsClient(uds, timeout=timeout) as client:
        return await client.request(route, data)


async def wait_drained(uds: str, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll the queued server's "bench_stats" until nothing is pending; returns (stats, seconds)."""
    started = time.perf_counter()
    async with UdsClient(uds, timeout=30.0) as client:
        while True:
            stats = await client.request("bench_stats")
            if stats["errors"]:
                raise BenchError(f"{stats['errors']} request(s) in the queued endpoint's error queue")
            if not stats["pending"]:
                return stats, time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise BenchError(f"queue not drained after {timeout:g}s: {stats}")
            await asyncio.sleep(0.02)


# ----- queued sender: enqueue M, wait until the target acknowledged all --------------


async def measure_delivery(uds: str, sender: str, first: int, count: int,
                           timeout: float) -> dict[str, Any]:
    """Enqueue *count* messages on *sender* of the sending app at *uds*, wait for their delivery.

    Returns messages per second from just before the enqueue request until a
    poll of eco.queued_sender.data shows pending == 0 and *count* more delivered.
    """
    query = {"queue_route_key": sender}
    async with UdsClient(uds, timeout=max(30.0, timeout)) as client:
        before = await client.request("eco.queued_sender.data", query)
        if before["pending"] or before["errors"]:
            raise BenchError(f"sender {sender} not idle before the batch: {before}")
        started = time.perf_counter()
        batch = await client.request("enqueue_batch", {"sender": sender, "first": first,
                                                       "count": count})
        enqueued = time.perf_counter()
        while True:
            data = await client.request("eco.queued_sender.data", query)
            now = time.perf_counter()
            delivered = data["delivered"] - before["delivered"]
            if data["errors"]:
                raise BenchError(f"sender {sender}: {data['errors']} message(s) in the error queue")
            if not data["pending"] and delivered >= count:
                break
            if now - started > timeout:
                raise BenchError(f"sender {sender}: {delivered}/{count} delivered after {timeout:g}s")
            await asyncio.sleep(POLL_INTERVAL)
    if delivered != count:
        raise BenchError(f"sender {sender}: {delivered} delivered, {count} enqueued")
    seconds = now - started
    return {
        "rate": count / seconds,
        "seconds": seconds,
        "enqueue_seconds": enqueued - started,
        "enqueue_seconds_in_app": batch["enqueue_seconds"],
    }


# ----- raw sqlite3 ---------------------------------------------------------------------


def sample_requests(count: int = 1024) -> list[bytes]:
    """Request JSON as the queued endpoint stores it (pydantic's serialisation of Order)."""
    return [pydantic_core.to_json(Order(**order(seq))) for seq in range(count)]


def sqlite_insert_rate(directory: Path, rows_per_commit: int, warmup: float, seconds: float) -> float:
    """Rows per second inserted into a fresh WAL, synchronous=FULL file, committing every N rows.

    The table has uid TEXT and request BLOB; the requests are the same JSON
    the queued endpoint stores, the uids fresh UUID strings (made beforehand).
    """
    path = directory / f"sqlite-baseline-{os.getpid()}-{rows_per_commit}.sqlite"
    requests = sample_requests()
    uids = [new_uid() for _ in range(len(requests))]
    rows = list(zip(uids, requests, strict=True))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE entries (uid TEXT NOT NULL, request BLOB NOT NULL)")
        insert = "INSERT INTO entries (uid, request) VALUES (?, ?)"
        # One commit unit: a single autocommit INSERT, or BEGIN, N rows, COMMIT.
        if rows_per_commit == 1:
            def unit(i: int) -> None:
                db.execute(insert, rows[i % len(rows)])
        else:
            def unit(i: int) -> None:
                db.execute("BEGIN")
                db.executemany(insert, itertools.islice(itertools.cycle(rows), i % len(rows),
                                                        i % len(rows) + rows_per_commit))
                db.execute("COMMIT")
        i = 0
        deadline = time.perf_counter() + warmup
        while time.perf_counter() < deadline:
            unit(i)
            i += 1
        start = time.perf_counter()
        deadline = start + seconds
        units = 0
        while True:
            unit(i)
            i += 1
            units += 1
            end = time.perf_counter()
            if end >= deadline:
                break
        return units * rows_per_commit / (end - start)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
