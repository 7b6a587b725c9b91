"""Queued and sequenced senders against real target applications."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel
from queuehelpers import eventually, running_app

from ecosys import (
    Registry,
    Reject,
    SenderNotOpen,
    TcpClient,
    ValidationFailed,
    backoff,
    endpoint,
    get_uid,
    queued_sender,
)
from ecosys.routing import Router
from ecosys.transport.tcp import TcpServer


class Msg(BaseModel):
    group: str = "g"
    n: int


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Target:
    """A real TCP server recording what it receives; can fail chosen messages."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, int, str | None]] = []
        self.reject: dict[tuple[str, int], int] = {}
        registry = Registry()

        @endpoint("take", registry=registry)
        async def take(request: Msg) -> None:
            status = self.reject.get((request.group, request.n))
            if status is not None:
                raise Reject(status, f"refusing {request.group}/{request.n}")
            self.received.append((request.group, request.n, get_uid()))

        self.server = TcpServer(Router(registry), "127.0.0.1", port)

    async def __aenter__(self) -> Target:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close(1)


def sender_registry(port: int, **options: object) -> tuple[Registry, object]:
    registry = Registry()
    client = TcpClient("127.0.0.1", port, retries=0, timeout=2)

    @queued_sender(client, "take", name="outbox", registry=registry,
                   backoff=backoff.constant(0.05), **options)
    def send(msg: Msg) -> Msg:
        return msg

    return registry, send


async def sender_data(client: TcpClient) -> dict:
    return await client.request("eco.queued_sender.data", {"queue_route_key": "outbox"})  # type: ignore[no-any-return]


async def test_target_down_then_up_delivers_in_order_across_restart(tmp_path: Path) -> None:
    port = free_port()
    target = Target(port)
    registry, send = sender_registry(port, sequenced=True)
    uids = []
    async with running_app(registry, tmp_path) as (_, client):
        for n in range(20):
            uids.append(await send(Msg(n=n)))
        await asyncio.sleep(0.2)  # target still down: everything waits
        assert (await sender_data(client))["pending"] == 20
    # The sending process restarts (fresh registry, same queue files) and the target comes up.
    registry, send = sender_registry(port, sequenced=True)
    async with running_app(registry, tmp_path) as (_, client):
        for n in range(20, 30):
            uids.append(await send(Msg(n=n)))
        async with target:
            await eventually(lambda: len(target.received) == 30, timeout=10)
            state = await sender_data(client)
    assert [n for _, n, _ in target.received] == list(range(30))
    assert [uid for _, _, uid in target.received] == uids, "the target sees each message's own uid"
    assert state["pending"] == 0 and state["errors"] == 0 and state["delivered"] == 30


async def test_non_retryable_status_goes_to_error_queue_at_once(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        target.reject[("g", 1)] = 300
        target.reject[("g", 2)] = 500  # retryable: stays pending until accepted
        uid1 = await send(Msg(n=1))
        await send(Msg(n=2))
        await send(Msg(n=3))
        await eventually(lambda: ("g", 3) in [(g, n) for g, n, _ in target.received])
        state = await eventually(lambda: _errors(client, 1))
        errors = await client.request("eco.queued_sender.errors.get_first_10", {"queue_route_key": "outbox"})
        assert [e["uid"] for e in errors] == [uid1]
        assert errors[0]["attempts"] == 1 and errors[0]["reason"].startswith("status 300: refusing g/1")
        assert state["pending"] == 1, "the 500 answer is retried, not parked"
        del target.reject[("g", 2)]
        await eventually(lambda: ("g", 2) in [(g, n) for g, n, _ in target.received])
        # Reprocess the parked one once the target accepts it.
        del target.reject[("g", 1)]
        await client.request("eco.queued_sender.errors.reprocess.all", {"queue_route_key": "outbox"})
        await eventually(lambda: ("g", 1) in [(g, n) for g, n, _ in target.received])


async def _errors(client: TcpClient, n: int) -> dict | None:
    state = await sender_data(client)
    return state if state["errors"] == n else None


async def test_max_retries_exhausted_goes_to_error_queue(tmp_path: Path) -> None:
    port = free_port()  # nobody listens: connection refused every time
    registry, send = sender_registry(port, max_retries=2)
    async with running_app(registry, tmp_path) as (_, client):
        uid = await send(Msg(n=1))
        await eventually(lambda: _errors(client, 1))
        entry = await client.request("eco.queued_sender.errors.inspect_request",
                                     {"queue_route_key": "outbox", "request_uid": uid})
        assert entry["attempts"] == 3 and "ConnectFailed" in entry["reason"] and "gave up" in entry["reason"]


async def test_sequenced_failing_head_blocks_only_its_group(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port, sequenced=True, group_key=lambda m: m.group)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        target.reject[("a", 0)] = 600
        for n in range(5):
            await send(Msg(group="a", n=n))
            await send(Msg(group="b", n=n))
        await eventually(lambda: len([1 for g, _, _ in target.received if g == "b"]) == 5)
        await asyncio.sleep(0.2)
        assert [n for g, n, _ in target.received if g == "a"] == [], "group a must wait behind its failed head"
        state = await sender_data(client)
        assert state["blocked_groups"] == ["a"] and state["errors"] == 1 and state["pending"] == 4
        # Reprocessing the head (now accepted) releases the group, strictly in order.
        del target.reject[("a", 0)]
        await client.request("eco.queued_sender.errors.reprocess.all", {"queue_route_key": "outbox"})
        await eventually(lambda: len([1 for g, _, _ in target.received if g == "a"]) == 5)
        assert [n for g, n, _ in target.received if g == "a"] == [0, 1, 2, 3, 4]
        assert [n for g, n, _ in target.received if g == "b"] == [0, 1, 2, 3, 4]


async def test_popping_the_failed_head_releases_its_group(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port, sequenced=True, group_key=lambda m: m.group)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        target.reject[("a", 0)] = 300
        head = await send(Msg(group="a", n=0))
        await send(Msg(group="a", n=1))
        await eventually(lambda: _errors(client, 1))
        await client.request("eco.queued_sender.errors.pop_request", {"queue_route_key": "outbox", "request_uid": head})
        await eventually(lambda: [n for _, n, _ in target.received] == [1])


async def test_skip_policy_lets_the_group_go_on(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port, sequenced=True, skip_failed=True)
    async with Target(port) as target, running_app(registry, tmp_path):
        target.reject[("g", 0)] = 300
        for n in range(3):
            await send(Msg(n=n))
        await eventually(lambda: [n for _, n, _ in target.received] == [1, 2])


async def test_pause_send_process_and_unknown_sender(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        key = {"queue_route_key": "outbox"}
        assert (await client.request("eco.queued_sender.send_process.pause", key))["sending"] is False
        for n in range(3):
            await send(Msg(n=n))
        await asyncio.sleep(0.15)
        assert target.received == [] and (await sender_data(client))["pending"] == 3
        await client.request("eco.queued_sender.send_process.unpause", key)
        await eventually(lambda: len(target.received) == 3)
        from ecosys import ValidationFailed

        with pytest.raises(ValidationFailed, match="unknown queued sender"):
            await client.request("eco.queued_sender.data", {"queue_route_key": "nope"})


async def test_sender_not_open_raises(tmp_path: Path) -> None:
    _, send = sender_registry(free_port())
    with pytest.raises(SenderNotOpen):
        await send(Msg(n=1))


def test_backoff_policies() -> None:
    assert backoff.constant(0.5)(7) == 0.5
    exp = backoff.exponential(base=1, factor=2, cap=10, jitter=0)
    assert [exp(a) for a in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    jittered = backoff.exponential(base=1, factor=2, cap=100, jitter=0.5)
    assert all(2 <= jittered(3) <= 6 for _ in range(100))
    with pytest.raises(ValueError):
        backoff.exponential(factor=0.5)




async def test_stop_does_not_wait_out_a_back_off(tmp_path: Path) -> None:
    import time

    registry = Registry()
    client = TcpClient("127.0.0.1", free_port(), retries=0, timeout=1)

    @queued_sender(client, "take", name="outbox", registry=registry, backoff=backoff.constant(30))
    def send(msg: Msg) -> Msg:
        return msg

    async with running_app(registry, tmp_path) as (app, _):
        await send(Msg(n=1))
        await asyncio.sleep(0.2)  # the first attempt failed; the delivery now sleeps 30 s
        started = time.monotonic()
    assert time.monotonic() - started < 1.5, "shutdown waited for the back-off"
    registry2, _ = sender_registry(free_port())
    async with running_app(registry2, tmp_path) as (_, client2):
        assert (await sender_data(client2))["pending"] == 1, "the message stays pending on disk"


async def test_unsendable_message_goes_to_error_queue_not_retried(tmp_path: Path) -> None:
    port = free_port()
    registry = Registry()
    client = TcpClient("127.0.0.1", port, retries=0, timeout=2, max_message_size=1024)

    @queued_sender(client, "take", name="outbox", registry=registry, backoff=backoff.constant(0.05))
    def send(msg: dict) -> dict:
        return msg

    async with Target(port), running_app(registry, tmp_path) as (_, app_client):
        await send({"n": 1, "pad": "x" * 2000})
        state = await eventually(lambda: _errors(app_client, 1))
        assert state["pending"] == 0
        errors = await app_client.request("eco.queued_sender.errors.get_first_10", {"queue_route_key": "outbox"})
        assert "exceeds the maximum message size" in errors[0]["reason"] and errors[0]["attempts"] == 1
        assert await app_client.request("eco.error_states.get") == {}


async def test_a_cancelled_caller_does_not_cancel_its_batch(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port, sequenced=True)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        first = asyncio.ensure_future(send(Msg(n=1)))
        second = asyncio.ensure_future(send(Msg(n=2)))
        await asyncio.sleep(0)  # both are stored and wait for the same commit
        first.cancel()
        uid = await second
        assert uid, "the other caller of the commit must get its uid, not a cancellation"
        # The cancelled caller's message was stored all the same: it is delivered, in order.
        await eventually(lambda: [n for _, n, _ in target.received] == [1, 2])
        assert (await sender_data(client))["pending"] == 0


async def test_a_backlog_from_before_sequencing_is_delivered(tmp_path: Path) -> None:
    port = free_port()  # target down: the messages stay pending
    registry, send = sender_registry(port)
    async with running_app(registry, tmp_path) as (_, client):
        for n in range(3):
            await send(Msg(n=n))
        assert (await sender_data(client))["pending"] == 3
    # The next run sequences the sender: the old messages (no group) form one lane.
    registry, send = sender_registry(port, sequenced=True, group_key=lambda m: m.group)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        await send(Msg(n=3))
        await eventually(lambda: len(target.received) == 4)
        assert sorted(n for _, n, _ in target.received) == [0, 1, 2, 3]
        assert [n for _, n, _ in target.received if n < 3] == [0, 1, 2]


async def test_clearing_the_error_queue_releases_blocked_groups(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port, sequenced=True, group_key=lambda m: m.group)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        target.reject[("a", 0)] = 300
        await send(Msg(group="a", n=0))
        await send(Msg(group="a", n=1))
        await eventually(lambda: _errors(client, 1))
        assert (await sender_data(client))["blocked_groups"] == ["a"]
        cleared = await client.request("eco.queued_sender.errors.clear", {"queue_route_key": "outbox"})
        assert cleared == {"cleared": 1}
        await eventually(lambda: [n for _, n, _ in target.received] == [1])
        assert (await sender_data(client))["blocked_groups"] == []


async def test_a_head_failing_while_a_clear_runs_keeps_its_group_blocked(tmp_path: Path) -> None:
    from ecosys.queues.sender import QueuedSender

    sender = QueuedSender(TcpClient("127.0.0.1", free_port(), retries=0), "take", sequenced=True,
                          group_key=lambda m: m["g"])
    await sender.open(tmp_path, "p")
    # Drive by hand: no delivery loop.
    sender._stopping = True
    assert sender._wakeup is not None and sender._worker is not None
    sender._wakeup.set()
    await sender._worker
    pair = sender.require_pair()
    old, _ = pair.push_nowait("0b1c5a2e-8a7e-4c55-9d0e-0a4b7b6c9f10", b"{}", "other")
    await pair.pending.flush()
    await sender._fail(old, "an older failure")
    head, _ = pair.push_nowait("0b1c5a2e-8a7e-4c55-9d0e-0a4b7b6c9f11", b"{}", "g")
    await pair.pending.flush()
    assert await pair.clear_errors() == 1
    # The head of group g fails while the clear's follow-up reads the error file.
    unblocking = asyncio.ensure_future(sender.unblock_removed())
    await asyncio.sleep(0)
    await sender._fail(head, "status 300: rejected")
    await unblocking
    assert sender._blocked == {"g": head.seq}, "group g was released past its failed head"
    assert await pair.error_seqs() == {head.seq}
    await sender._close_storage()


async def test_closing_the_client_under_a_delivery_retries_it(tmp_path: Path) -> None:
    from ecosys.queues.sender import QueuedSender

    port = free_port()
    # The target does not accept connections yet: the delivery waits in the
    # connect when the application closes the shared client under it.
    from test_clients import _unresponsive_listener  # type: ignore[import-not-found]

    stalled_port, sockets = await _unresponsive_listener()
    client = TcpClient("127.0.0.1", stalled_port, connect_timeout=30, heartbeat_interval=None)
    sender = QueuedSender(client, "take", sequenced=True, backoff=backoff.constant(0.05))
    await sender.open(tmp_path, "p")
    try:
        await sender.enqueue(Msg(n=1).model_dump())
        await asyncio.sleep(0.1)
        client.port = port  # the next connect goes to the real target (still down)
        await client.close()
        await asyncio.sleep(0.2)
        state = sender.data()
        assert state["errors"] == 0 and state["pending"] == 1, state
        async with Target(port) as target:
            await eventually(lambda: [n for _, n, _ in target.received] == [1])
    finally:
        await sender.close(1)
        for sock in sockets:
            sock.close()  # type: ignore[attr-defined]


async def test_a_reprocess_one_that_lost_the_race_says_the_uid_is_gone(tmp_path: Path) -> None:
    port = free_port()
    registry, send = sender_registry(port)
    async with Target(port) as target, running_app(registry, tmp_path) as (_, client):
        target.reject[("g", 1)] = 300
        uid = await send(Msg(n=1))
        await eventually(lambda: _errors(client, 1))
        del target.reject[("g", 1)]
        key = {"queue_route_key": "outbox", "request_uid": uid}
        answers = await asyncio.gather(
            client.request("eco.queued_sender.errors.reprocess.one", key),
            client.request("eco.queued_sender.errors.reprocess.one", key),
            return_exceptions=True,
        )
        await eventually(lambda: target.received)
    assert {"reprocessed": 1} in answers, answers
    assert {"reprocessed": 0} not in answers, "status 0 for a uid another call already moved"
    [lost] = [a for a in answers if a != {"reprocessed": 1}]
    assert isinstance(lost, ValidationFailed) and "no request with uid" in str(lost), lost
    assert [n for _, n, _ in target.received] == [1]
