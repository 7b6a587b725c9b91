"""Broadcasting to several real services: plain, queued and sequenced."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from pydantic import BaseModel
from queuehelpers import eventually, running_app

from ecosys import (
    ConnectFailed,
    Registry,
    Router,
    TcpClient,
    TcpServer,
    ValidationFailed,
    backoff,
    broadcaster,
    endpoint,
    queued_broadcaster,
)


class Note(BaseModel):
    n: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Listener:
    """A real TCP service recording the notes it gets."""

    def __init__(self, port: int, name: str) -> None:
        self.got: list[int] = []
        registry = Registry()

        @endpoint("note", registry=registry)
        async def note(request: Note) -> str:
            self.got.append(request.n)
            return name

        self.server = TcpServer(Router(registry), "127.0.0.1", port)

    async def __aenter__(self) -> Listener:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close(1)


async def test_broadcast_reaches_every_target_and_reports_each() -> None:
    ports = [free_port() for _ in range(3)]
    clients = [TcpClient("127.0.0.1", p, retries=0) for p in ports]

    @broadcaster([(c, "note") for c in clients])
    def announce(n: int) -> Note:
        return Note(n=n)

    async with Listener(ports[0], "a") as a, Listener(ports[1], "b") as b:
        # The third target is down: its result says so, the others still get the note.
        results = await announce(1)
        assert [r.data for r in results[:2]] == ["a", "b"] and all(r.ok for r in results[:2])
        assert not results[2].ok and isinstance(results[2].error, ConnectFailed)
        assert results[2].target == f"note @ tcp://127.0.0.1:{ports[2]}"
        assert a.got == [1] and b.got == [1]
        # A bad message is refused by each target with its own error.
        results = await announce.broadcaster.send({"n": "x"})  # type: ignore[attr-defined]
        assert all(isinstance(r.error, (ValidationFailed, ConnectFailed)) for r in results)
    for client in clients:
        await client.close()


def test_broadcaster_needs_targets() -> None:
    with pytest.raises(ValueError):
        broadcaster([])


async def test_sequenced_broadcast_orders_each_target_independently(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    registry = Registry()
    clients = [TcpClient("127.0.0.1", p, retries=0, timeout=2) for p in ports]

    @queued_broadcaster([(c, "note") for c in clients], name="fanout", registry=registry,
                        sequenced=True, backoff=backoff.constant(0.05))
    def announce(n: int) -> Note:
        return Note(n=n)

    async with running_app(registry, tmp_path) as (_, client):
        async with Listener(ports[0], "a") as a:
            for n in range(10):
                uids = await announce(n)
                assert len(uids) == 2
            # Target 0 is up and gets everything in order; target 1 is down and waits.
            await eventually(lambda: a.got == list(range(10)))
            second = f"fanout.127.0.0.1_{ports[1]}.note"
            state = await client.request("eco.queued_sender.data", {"queue_route_key": second})
            assert state["pending"] == 10
            async with Listener(ports[1], "b") as b:
                await eventually(lambda: b.got == list(range(10)), timeout=10)
        names = [s["queue_route_key"] for s in await client.request("eco.queued_sender.data", {})]
        assert names == [f"fanout.127.0.0.1_{ports[0]}.note", second], "each queue is named after its target"
    await asyncio.sleep(0)


async def test_a_failing_target_does_not_keep_the_message_from_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecosys import BroadcastIncomplete

    ports = [free_port(), free_port(), free_port()]
    registry = Registry()
    clients = [TcpClient("127.0.0.1", p, retries=0, timeout=2) for p in ports]

    @queued_broadcaster([(c, "note") for c in clients], name="fanout", registry=registry,
                        backoff=backoff.constant(0.05))
    def announce(n: int) -> Note:
        return Note(n=n)

    async with running_app(registry, tmp_path) as (_, client):
        senders = announce.queued_senders  # type: ignore[attr-defined]
        pending = senders[1].pair.pending
        real_apply = pending._apply_sync

        def disk_error(batch):  # type: ignore[no-untyped-def]
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(pending, "_apply_sync", disk_error)
        with pytest.raises(BroadcastIncomplete) as info:
            await announce(1)
        names = [f"fanout.127.0.0.1_{port}.note" for port in ports]
        assert set(info.value.stored) == {names[0], names[2]}, "the target after the failing one was skipped"
        assert set(info.value.failed) == {names[1]}
        monkeypatch.setattr(pending, "_apply_sync", real_apply)
        states = {s["queue_route_key"]: s["pending"]
                  for s in await client.request("eco.queued_sender.data", {})}
        assert states == {names[0]: 1, names[1]: 0, names[2]: 1}


async def test_pending_messages_follow_their_target_when_the_list_changes_between_runs(tmp_path: Path) -> None:
    ports = [free_port(), free_port(), free_port()]

    def announce_to(order: list[int], extra: list[tuple[int, str]] = []) -> tuple[Registry, object]:  # noqa: B006
        registry = Registry()
        targets = [(TcpClient("127.0.0.1", ports[i], retries=0, timeout=2), route)
                   for i, route in [(i, "note") for i in order] + extra]

        @queued_broadcaster(targets, name="fanout", registry=registry,
                            sequenced=True, backoff=backoff.constant(0.05))
        def announce(n: int) -> Note:
            return Note(n=n)

        return registry, announce

    registry, announce = announce_to([0, 1, 2])
    async with Listener(ports[0], "a") as a, Listener(ports[2], "c") as c:
        async with running_app(registry, tmp_path):
            for n in range(3):
                await announce(n)  # type: ignore[operator]
            await eventually(lambda: a.got == [0, 1, 2] and c.got == [0, 1, 2])
        # Restarted with the targets in another order, the third one gone and another
        # route key on the second's address: what waits for the second target (down
        # so far) must reach it, and only it.
        registry, announce = announce_to([1, 0], [(1, "audit")])
        async with Listener(ports[1], "b") as b, running_app(registry, tmp_path):
            await eventually(lambda: b.got == [0, 1, 2], timeout=10)
            await asyncio.sleep(0.3)
    assert a.got == [0, 1, 2] and c.got == [0, 1, 2], "a target got another target's messages"
    assert b.got == [0, 1, 2]


def test_targets_can_be_named_and_a_target_listed_twice_is_refused() -> None:
    from ecosys import ConfigurationError, UdsClient

    registry = Registry()
    one, other = TcpClient("127.0.0.1", 7000), UdsClient("/run/gw/gateway.sock")

    @queued_broadcaster({"primary": (one, "note"), "backup": (other, "note")}, name="named",
                        registry=registry)
    def named(n: int) -> Note:
        return Note(n=n)

    @queued_broadcaster([(one, "note"), (one, "audit"), (other, "note")], name="derived", registry=registry)
    def derived(n: int) -> Note:
        return Note(n=n)

    assert [s.name for s in named.queued_senders] == ["named.primary", "named.backup"]  # type: ignore[attr-defined]
    assert [s.name for s in derived.queued_senders] == [  # type: ignore[attr-defined]
        "derived.127.0.0.1_7000.note", "derived.127.0.0.1_7000.audit", "derived.gateway.sock.note"]
    with pytest.raises(ConfigurationError, match="listed twice"):
        queued_broadcaster([(one, "note"), (TcpClient("127.0.0.1", 7000), "note")], name="twice",
                           registry=registry)
    with pytest.raises(ConfigurationError, match="would share the queue sockets.gateway.sock.note"):
        queued_broadcaster([(other, "note"), (UdsClient("/run/gw2/gateway.sock"), "note")], name="sockets",
                           registry=registry)
    with pytest.raises(ConfigurationError, match="target key"):
        queued_broadcaster({"a/b": (one, "note")}, name="badkey", registry=registry)


async def test_a_queued_broadcast_before_the_application_started_raises_sender_not_open() -> None:
    from ecosys import SenderNotOpen

    @queued_broadcaster([(TcpClient("127.0.0.1", 7000), "note"), (TcpClient("127.0.0.1", 7001), "note")],
                        name="early", registry=Registry())
    def early(n: int) -> Note:
        return Note(n=n)

    with pytest.raises(SenderNotOpen, match="not open"):
        await early(1)
