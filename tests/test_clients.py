"""Clients over real sockets: multiplexing, reconnects, timeouts, retries, typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import uuid
from pathlib import Path

import orjson
import pydantic
import pytest
from conftest import build_registry
from pydantic import BaseModel

from ecosys import (
    BadResponse,
    Client,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    ProcessingFailed,
    Registry,
    RequestTimeout,
    Router,
    TcpClient,
    TcpServer,
    TransportError,
    UdpClient,
    UdpServer,
    UdsClient,
    UdsServer,
    UnknownRoute,
    ValidationFailed,
    client_from_url,
    endpoint,
    sender,
    uid_scope,
)


class Echo(BaseModel):
    message: str


def make_client(kind: str, server: object, **options: object) -> Client:
    if kind == "tcp":
        return TcpClient("127.0.0.1", server.port, **options)  # type: ignore[attr-defined]
    if kind == "uds":
        return UdsClient(server.path, **options)  # type: ignore[attr-defined]
    return UdpClient("127.0.0.1", server.port, **options)  # type: ignore[attr-defined]


@pytest.fixture(params=["tcp", "uds", "udp"])
def kind_and_server(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param, request.getfixturevalue(f"{request.param}_server")


async def test_two_hundred_in_flight_matched(kind_and_server: tuple[str, object]) -> None:
    kind, server = kind_and_server
    async with make_client(kind, server) as client:
        results = await asyncio.gather(
            *(client.request("count", {"n": i}) for i in range(200))
        )
        assert [r["n"] for r in results] == list(range(200))


@pytest.fixture(params=["tcp", "uds"])
def stream_kind_server(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param, request.getfixturevalue(f"{request.param}_server")


async def test_shared_client_opens_one_connection(
    router: Router, short_tmp: Path, stream_kind_server: tuple[str, object]
) -> None:
    kind, _ = stream_kind_server
    opened = 0
    base = TcpServer if kind == "tcp" else UdsServer

    class CountingServer(base):  # type: ignore[valid-type,misc]
        def _factory(self):  # type: ignore[no-untyped-def]
            nonlocal opened
            opened += 1
            return super()._factory()

    args = ("127.0.0.1", 0) if kind == "tcp" else (str(short_tmp / "count.sock"),)
    server = CountingServer(router, *args)
    await server.start()
    try:
        async with make_client(kind, server) as client:
            results = await asyncio.gather(
                *(client.request("echo", {"message": str(i)}) for i in range(300))
            )
        assert [r["message"] for r in results] == [str(i) for i in range(300)]
        assert opened == 1
    finally:
        await server.close(1)


async def test_transient_client_uses_one_connection_per_request(
    stream_kind_server: tuple[str, object],
) -> None:
    kind, server = stream_kind_server
    async with make_client(kind, server, persistent=False) as client:
        results = await asyncio.gather(*(client.request("echo", {"message": str(i)}) for i in range(20)))
        assert len(results) == 20
    await asyncio.sleep(0.05)
    assert len(server.connections) == 0, "transient connections must be closed"  # type: ignore[attr-defined]


async def test_persistent_client_survives_server_restart(router: Router) -> None:
    server = TcpServer(router, "127.0.0.1", 0)
    await server.start()
    port = server.port
    client = TcpClient("127.0.0.1", port, retries=5, retry_delay=0.05)
    try:
        assert (await client.request("echo", {"message": "one"}))["message"] == "one"
        await server.close(1)
        with pytest.raises(ConnectFailed):
            await TcpClient("127.0.0.1", port, retries=0).request("echo", {"message": "x"})
        server = TcpServer(router, "127.0.0.1", port)
        await server.start()
        assert (await client.request("echo", {"message": "two"}))["message"] == "two"
    finally:
        await client.close()
        await server.close(1)


async def test_persistent_uds_client_survives_server_restart(router: Router, short_tmp: Path) -> None:
    path = str(short_tmp / "r.sock")
    server = UdsServer(router, path)
    await server.start()
    client = UdsClient(path, retries=5, retry_delay=0.05)
    try:
        assert (await client.request("echo", {"message": "one"}))["message"] == "one"
        await server.close(1)
        server = UdsServer(router, path)
        await server.start()
        assert (await client.request("echo", {"message": "two"}))["message"] == "two"
    finally:
        await client.close()
        await server.close(1)


@pytest.mark.parametrize("persistent", [True, False])
async def test_timeout_leaves_nothing_behind(tcp_server: TcpServer, persistent: bool) -> None:
    client = TcpClient("127.0.0.1", tcp_server.port, persistent=persistent, heartbeat_interval=None)
    await client.request("echo", {"message": "warm"})
    before = asyncio.all_tasks()
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await client.request("sleep", {"seconds": 2}, timeout=0.2)
    assert time.monotonic() - started < 1.0
    client_side = asyncio.all_tasks() - before - tcp_server.in_flight
    assert not client_side, f"the timed-out call left a task behind: {client_side}"
    if persistent:
        assert client._connection is not None and client._connection.matcher.pending == {}
    # The client still works after a timeout.
    assert (await client.request("echo", {"message": "after"}))["message"] == "after"
    await client.close()
    await asyncio.sleep(0.05)
    # Only the handler of the abandoned request may still hold a server connection open.
    assert len(tcp_server.connections) <= 1


async def test_timeout_is_retried_only_when_asked(tcp_server: TcpServer, router: Router) -> None:
    calls = 0
    registry = router.registry

    @endpoint("slow_once", registry=registry)
    async def slow_once() -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            await asyncio.sleep(1)
        return calls

    async with TcpClient("127.0.0.1", tcp_server.port, timeout=0.2) as client:
        with pytest.raises(RequestTimeout):
            await client.request("slow_once")
    async with TcpClient("127.0.0.1", tcp_server.port, timeout=0.2, retry_on_timeout=True,
                         retry_delay=0.01) as client:
        assert await client.request("slow_once") == 3


async def test_connect_failure_retries_then_raises() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there now
    client = TcpClient("127.0.0.1", port, retries=3, retry_delay=0.05)
    started = time.monotonic()
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await client.request("echo", {"message": "x"})
    elapsed = time.monotonic() - started
    assert 0.05 + 0.1 + 0.2 <= elapsed < 2, "three retries with doubling delays expected"
    with pytest.raises(ConnectFailed):
        await UdsClient("/nonexistent/dir/x.sock", retries=0).request("echo")
    with pytest.raises(ConnectFailed, match="unreachable"):
        await UdpClient("127.0.0.1", port, retries=0, timeout=2).request("echo", {"message": "x"})


async def test_error_responses_raise_typed_exceptions(kind_and_server: tuple[str, object]) -> None:
    kind, server = kind_and_server
    async with make_client(kind, server) as client:
        with pytest.raises(UnknownRoute) as unknown:
            await client.request("nope")
        assert unknown.value.status == 400 and "nope" in unknown.value.message
        with pytest.raises(ValidationFailed) as invalid:
            await client.request("echo", {"message": 1})
        assert invalid.value.status == 300 and invalid.value.details[0]["loc"] == ["message"]
        with pytest.raises(ProcessingFailed) as failed:
            await client.request("boom")
        assert failed.value.status == 600 and "kaboom" in str(failed.value)
        response = await client.send("nope")
        assert response.status == 400 and not response.ok
        with pytest.raises(BadResponse):
            await client.request("echo", {"message": "x"}, response_model=int)


async def test_sender_returns_models_and_raises(tcp_server: TcpServer) -> None:
    client = TcpClient("127.0.0.1", tcp_server.port)

    @sender(client, "echo", Echo)
    def send_echo(message: str) -> Echo:
        return Echo(message=message)

    @sender(client, "echo", Echo)
    async def send_async(message: str) -> dict:
        return {"message": message}

    @sender(client, "echo", Echo)
    def send_bad() -> dict:
        return {"message": None}

    assert await send_echo("a") == Echo(message="a")
    assert await send_async("b") == Echo(message="b")
    with pytest.raises(ValidationFailed) as exc:
        await send_bad()
    assert exc.value.status == 300 and exc.value.message
    await client.close()


async def test_uid_propagates_through_a_handler(tcp_server: TcpServer, router: Router) -> None:
    downstream = TcpClient("127.0.0.1", tcp_server.port)

    @endpoint("relay", registry=router.registry)
    async def relay() -> dict:
        # Two concurrent calls with the same (propagated) uid on one connection.
        first, second = await asyncio.gather(
            downstream.request("whoami"), downstream.request("count", {"n": 5})
        )
        return {"seen": first, "n": second["n"]}

    uid = str(uuid.uuid4())
    async with TcpClient("127.0.0.1", tcp_server.port) as client:
        assert await client.request("relay", uid=uid) == {"seen": uid, "n": 5}
        with uid_scope() as scoped:
            assert await client.request("whoami") == scoped
    await downstream.close()


async def test_heartbeat_detects_dead_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts and reads, never answers: a hung peer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TcpClient("127.0.0.1", port, timeout=30, heartbeat_interval=0.1, heartbeat_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="heartbeat"):
        await client.request("echo", {"message": "x"})
    assert time.monotonic() - started < 2
    await client.close()
    server.close()


async def test_close_finishes_when_a_heartbeat_reply_arrives_with_the_cancel() -> None:
    # Regression: on Python 3.11 asyncio.wait_for swallowed the cancellation that
    # close() sends to the heartbeat task when the ACK completed in the same loop
    # iteration; the task kept beating and close() waited for it forever.
    enq_seen = asyncio.Event()

    async def holds_acks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line == b"\x05\n":
                enq_seen.set()  # never answered: the test completes the ACK itself
                continue
            uid = json.loads(line)["uid"]
            writer.write(json.dumps({"uid": uid, "status": 0, "data": "ok"}).encode() + b"\n")

    server = await asyncio.start_server(holds_acks, "127.0.0.1", 0)
    client = TcpClient("127.0.0.1", server.sockets[0].getsockname()[1],
                       heartbeat_interval=0.01, heartbeat_timeout=30)
    assert await client.request("anything") == "ok"
    await asyncio.wait_for(enq_seen.wait(), 5)
    connection = client._connection
    assert connection is not None and connection._ack is not None
    connection._ack.set_result(None)  # the ACK "arrives" ...
    async with asyncio.timeout(5):  # ... in the same iteration as close()'s cancel
        await client.close()
    assert client._heartbeat_task is None
    server.close()


async def test_bad_response_bytes_fail_the_call() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"this is not a response\n")
        await writer.drain()

    server = await asyncio.start_server(liar, "127.0.0.1", 0)
    async with TcpClient("127.0.0.1", server.sockets[0].getsockname()[1]) as client:
        with pytest.raises(BadResponse):
            await client.request("echo", {"message": "x"})
    server.close()


async def test_oversized_request_refused_locally(tcp_server: TcpServer) -> None:
    async with TcpClient("127.0.0.1", tcp_server.port, max_message_size=1024) as client:
        with pytest.raises(TransportError, match="exceeds"):
            await client.request("echo", {"message": "x" * 2000})


def test_client_from_url() -> None:
    tcp = client_from_url("tcp://localhost:9000")
    assert isinstance(tcp, TcpClient) and (tcp.host, tcp.port) == ("localhost", 9000)
    udp = client_from_url("udp://127.0.0.1:9001", timeout=1)
    assert isinstance(udp, UdpClient) and udp.timeout == 1
    uds = client_from_url("uds:///tmp/x.sock", persistent=False)
    assert isinstance(uds, UdsClient) and uds.path == "/tmp/x.sock" and not uds.persistent
    for bad in ("http://x:1", "tcp://host", "tcp://host:notaport", "uds://", "nonsense",
                # Parts a service URL does not have are refused, not dropped.
                "tcp://127.0.0.1:8000/path", "udp://h:1?x=1", "tcp://h:1#top", "tcp://user@h:1",
                "uds:///run/app.sock?mode=x"):
        with pytest.raises(ValueError):
            client_from_url(bad)
    # An IPv6 host goes back into its URL in brackets, for tcp and udp alike.
    for url in ("tcp://[::1]:9000", "udp://[::1]:9001", "tcp://localhost:9000"):
        assert client_from_url(url).url == url
    assert client_from_url("tcp://[::1]:9000").host == "::1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_tcp_and_udp_over_ipv6_loopback_by_the_url_the_server_prints(router: Router) -> None:
    # The bracketed URL a server prints is one a client can use as it stands.
    servers = [TcpServer(router, "::1", 0), UdpServer(router, "::1", 0)]
    for server in servers:
        await server.start()
    try:
        for server in servers:
            url = repr(server)
            assert url.startswith(("tcp://[::1]:", "udp://[::1]:")), url
            async with client_from_url(url, timeout=5) as client:
                assert await client.request("echo", {"message": "v6"}) == {"message": "v6"}
    finally:
        for server in servers:
            await server.close(1)


async def test_udp_lost_datagram_is_retried(router: Router) -> None:
    # A UDP "server" that drops the first datagram, then forwards to the real one.
    real = UdpServer(router, "127.0.0.1", 0)
    await real.start()
    seen = 0

    class Dropper(asyncio.DatagramProtocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            nonlocal seen
            seen += 1
            if seen > 1:
                real.datagram_received(data, addr)
                # The real server answers through its own socket; reply from ours instead.

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Dropper, local_addr=("127.0.0.1", 0))
    real._transport = transport  # answers go out from the socket the client talks to
    port = transport.get_extra_info("sockname")[1]
    async with UdpClient("127.0.0.1", port, timeout=0.2, retries=2, retry_delay=0.01) as client:
        assert (await client.request("echo", {"message": "again"}))["message"] == "again"
    assert seen == 2
    transport.close()


class Charge(BaseModel):
    seconds: float


class CountingRouter:
    """Builds a registry whose "charge" endpoint counts its runs (side effects that must not repeat)."""

    def __init__(self) -> None:
        self.runs = 0
        registry = Registry()

        @endpoint("charge", registry=registry)
        async def charge(request: Charge) -> int:
            self.runs += 1
            await asyncio.sleep(request.seconds)
            return self.runs

        @endpoint("ping", registry=registry)
        async def ping() -> str:
            return "pong"

        self.router = Router(registry)


async def test_udp_close_under_a_request_fails_it_without_sending_it_again() -> None:
    counting = CountingRouter()
    server = UdpServer(counting.router, "127.0.0.1", 0)
    await server.start()
    client = UdpClient("127.0.0.1", server.port, retry_on_timeout=False, timeout=2, retry_delay=0.01)
    call = asyncio.create_task(client.request("charge", {"seconds": 0.3}))
    await asyncio.sleep(0.1)  # sent; the handler runs
    await client.close()
    with pytest.raises(ClientClosed):
        await call
    await asyncio.sleep(0.4)
    assert counting.runs == 1, "a request the server received must not be sent again"
    await server.close(1)


async def test_stream_close_under_a_request_fails_it_with_client_closed(short_tmp: Path) -> None:
    counting = CountingRouter()
    server = UdsServer(counting.router, str(short_tmp / "charge.sock"))
    await server.start()
    client = UdsClient(server.path, retry_on_timeout=True, retry_delay=0.01)
    call = asyncio.create_task(client.request("charge", {"seconds": 0.3}))
    await asyncio.sleep(0.1)
    await client.close()
    with pytest.raises(ClientClosed, match="closed while waiting for a response"):
        await call
    await asyncio.sleep(0.4)
    assert counting.runs == 1
    # The client reconnects when used again.
    assert await client.request("ping") == "pong"
    await client.close()
    await server.close(1)


async def test_udp_port_unreachable_retries_only_what_surely_was_not_processed() -> None:
    counting = CountingRouter()
    first = UdpServer(counting.router, "127.0.0.1", 0)
    await first.start()
    port = first.port
    client = UdpClient("127.0.0.1", port, timeout=3, retry_delay=0.3)
    assert await client.request("ping") == "pong"  # its socket is open now
    client.retry_on_timeout = False  # and the changed setting applies to it all the same
    charged = asyncio.create_task(client.request("charge", {"seconds": 1.0}))
    await asyncio.sleep(0.1)  # received and run: its answer will never come
    await first.close(0)
    pinged = asyncio.create_task(client.request("ping"))  # refused by ICMP: nobody listens
    await asyncio.sleep(0.1)
    second = UdpServer(counting.router, "127.0.0.1", port)
    await second.start()
    # Which datagram the ICMP refused is unknown: both may have been processed.
    for call in (charged, pinged):
        with pytest.raises(ConnectionLost, match="may have been processed"):
            await call
    assert counting.runs == 1
    # Alone in flight, a refused request surely was not processed: retried once the port answers.
    await second.close(0)
    alone = asyncio.create_task(client.request("ping"))
    await asyncio.sleep(0.1)
    third = UdpServer(counting.router, "127.0.0.1", port)
    await third.start()
    assert await alone == "pong"
    await client.close()
    await third.close(1)


def test_registry_fixture_isolated() -> None:
    assert len(Registry()) == 0


async def test_mixed_timeouts_on_one_connection(tcp_server: TcpServer) -> None:
    async with TcpClient("127.0.0.1", tcp_server.port) as client:
        slow = asyncio.create_task(client.request("sleep", {"seconds": 0.6}, timeout=5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            await client.request("sleep", {"seconds": 2}, timeout=0.2)
        assert time.monotonic() - started < 0.5, "a shorter deadline must not wait for a longer one"
        assert (await slow)["seconds"] == 0.6
        # Many answered requests later, timeouts still fire.
        await asyncio.gather(*(client.request("echo", {"message": "x"}) for _ in range(500)))
        with pytest.raises(RequestTimeout):
            await client.request("sleep", {"seconds": 1}, timeout=0.1)


async def test_late_answer_never_reaches_the_next_same_uid_caller(tcp_server: TcpServer) -> None:
    uid = str(uuid.uuid4())
    async with TcpClient("127.0.0.1", tcp_server.port) as client:
        with pytest.raises(RequestTimeout):
            await client.request("sleep", {"seconds": 0.4}, uid=uid, timeout=0.1)
        # Same uid again at once: it must get its own answer, not the late 0.4 one.
        answer = await client.request("sleep", {"seconds": 0.05}, uid=uid, timeout=2)
        assert answer == {"seconds": 0.05}


async def test_malformed_uid_refused_before_sending(tcp_server: TcpServer) -> None:
    async with TcpClient("127.0.0.1", tcp_server.port) as client:
        with pytest.raises(ValueError, match="uid must be a UUID"):
            await client.request("echo", {"message": "x"}, uid="not-a-uid")


async def test_error_without_uid_reaches_the_only_caller() -> None:
    async def answer_null_uid(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'{"uid":null,"status":100,"data":{"message":"cannot parse","details":null}}\n')
        await writer.drain()

    server = await asyncio.start_server(answer_null_uid, "127.0.0.1", 0)
    async with TcpClient("127.0.0.1", server.sockets[0].getsockname()[1]) as client:
        from ecosys import ProtocolErrorResponse

        with pytest.raises(ProtocolErrorResponse, match="cannot parse"):
            await client.request("echo", {"message": "x"})
    server.close()


async def test_error_for_another_uid_does_not_reach_the_only_caller() -> None:
    stray = str(uuid.uuid4())

    async def answer_other_uid(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'{"uid":"' + stray.encode() + b'","status":600,"data":{"message":"not yours","details":null}}\n')
        await writer.drain()
        await reader.read()  # keep the connection open until the client leaves

    server = await asyncio.start_server(answer_other_uid, "127.0.0.1", 0)
    async with TcpClient("127.0.0.1", server.sockets[0].getsockname()[1], timeout=0.3) as client:
        with pytest.raises(RequestTimeout):
            await client.request("echo", {"message": "x"})
    server.close()


async def test_gathered_requests_share_writes_and_all_get_answers(uds_server: UdsServer) -> None:
    # 64 callers on one connection: requests written while others are in flight
    # are gathered, and every caller still gets its own answer.
    async with UdsClient(uds_server.path) as client:
        await client.request("echo", {"message": "warm-up"})
        connection = client._connection
        assert connection is not None
        writes = 0
        transport = connection.transport
        assert transport is not None
        original_write = transport.write

        def counting_write(data: bytes) -> None:
            nonlocal writes
            writes += 1
            original_write(data)

        transport.write = counting_write  # type: ignore[method-assign]

        async def caller(i: int) -> None:
            for j in range(10):
                reply = await client.request("echo", {"message": f"{i}-{j}"})
                assert reply == {"message": f"{i}-{j}"}

        await asyncio.gather(*(caller(i) for i in range(64)))
        assert writes < 640, "requests in flight together should share writes"


async def test_gathered_request_lost_with_the_connection_is_retried(router: Router, short_tmp: Path) -> None:
    seen: list[str] = []
    release = asyncio.Event()
    first_arrived = asyncio.Event()

    @endpoint("hold", registry=router.registry)
    async def hold(request: Echo) -> Echo:
        seen.append(request.message)
        if request.message == "first":
            first_arrived.set()
            await release.wait()
        return request

    server = UdsServer(router, str(short_tmp / "g.sock"))
    await server.start()
    client = UdsClient(server.path, retries=2, retry_delay=0.01)
    try:
        first = asyncio.create_task(client.request("hold", {"message": "first"}))
        await asyncio.wait_for(first_arrived.wait(), 5)
        # Both start in the next loop iteration; the first is still in flight, so
        # they are gathered, and the connection dies before the gathered write.
        second = asyncio.create_task(client.request("hold", {"message": "second"}))
        third = asyncio.create_task(client.request("hold", {"message": "third"}))
        connection = client._connection
        assert connection is not None
        asyncio.get_running_loop().call_soon(connection.abort, ConnectionLost("dropped by the test"))
        with pytest.raises(ConnectionLost):
            await first  # it was sent: it may have run, so it is not retried
        assert await second == {"message": "second"}
        assert await third == {"message": "third"}
        assert seen.count("second") == 1 and seen.count("third") == 1
    finally:
        release.set()
        await client.close()
        await server.close(1)


async def test_shared_receive_buffer_keeps_connections_apart(router: Router, short_tmp: Path) -> None:
    # On asyncio's loop every connection of the thread receives into one shared
    # buffer; messages larger than it, on several connections at once, must each
    # arrive whole and on their own connection.
    from ecosys.transport.readbuf import RECEIVE_BUFFER_SIZE

    server = UdsServer(router, str(short_tmp / "b.sock"), max_message_size=4 * 1024 * 1024)
    await server.start()
    clients = [UdsClient(server.path, max_message_size=4 * 1024 * 1024) for _ in range(3)]
    try:
        async def exchange(client: UdsClient, i: int) -> None:
            size = RECEIVE_BUFFER_SIZE * 2 + 1000 * i if i % 2 else 10 + i
            message = chr(ord("a") + i % 26) * size
            assert (await client.request("echo", {"message": message}))["message"] == message

        await asyncio.gather(*(exchange(clients[i % 3], i) for i in range(12)))
        kinds = {type(conn).__name__ for conn in server.connections}
        assert kinds == {"BufferedStreamServerProtocol"}
        assert {type(c._connection).__name__ for c in clients} == {"BufferedStreamClientProtocol"}
    finally:
        for client in clients:
            await client.close()
        await server.close(1)


def test_uvloop_connections_use_its_own_receive_buffer(short_tmp: Path) -> None:
    # uvloop reads into a buffer of its own: the plain protocols serve there.
    import uvloop

    async def main() -> tuple[set[str], str | None, object]:
        server = UdsServer(Router(build_registry()), str(short_tmp / "uv.sock"))
        await server.start()
        client = UdsClient(server.path)
        try:
            reply = await client.request("echo", {"message": "on uvloop"})
            return ({type(c).__name__ for c in server.connections},
                    type(client._connection).__name__, reply)
        finally:
            await client.close()
            await server.close(1)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        kinds, client_kind, reply = runner.run(main())
    assert kinds == {"StreamServerProtocol"} and client_kind == "StreamClientProtocol"
    assert reply == {"message": "on uvloop"}


async def test_large_requests_are_written_as_they_come(router: Router, short_tmp: Path) -> None:
    # Gathering saves system calls for small requests; large ones are not joined
    # (that would only copy them once more).
    from ecosys.transport.client import GATHER_BYTES

    server = UdsServer(router, str(short_tmp / "l.sock"), max_message_size=1024 * 1024)
    await server.start()
    client = UdsClient(server.path, max_message_size=1024 * 1024)
    try:
        await client.request("echo", {"message": "warm-up"})
        connection = client._connection
        assert connection is not None and connection.transport is not None
        sizes: list[int] = []
        original_write = connection.transport.write

        def recording_write(data: bytes) -> None:
            sizes.append(len(data))
            original_write(data)

        connection.transport.write = recording_write  # type: ignore[method-assign]
        big = "y" * GATHER_BYTES
        replies = await asyncio.gather(*(client.request("echo", {"message": big + str(i)}) for i in range(20)))
        assert [r["message"] for r in replies] == [big + str(i) for i in range(20)]
        assert len(sizes) == 20 and max(sizes) < 2 * GATHER_BYTES, "each large request goes alone"
    finally:
        await client.close()
        await server.close(1)


@pytest.fixture(params=["tcp", "uds"])
def stream_kind_and_server(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param, request.getfixturevalue(f"{request.param}_server")


async def test_a_cancelled_request_never_hands_its_answer_to_the_next_with_its_uid(
    stream_kind_and_server: tuple[str, object],
) -> None:
    kind, server = stream_kind_and_server
    uid = str(uuid.uuid4())  # requests sent while handling one share its uid
    async with make_client(kind, server, heartbeat_interval=None) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.request("sleep", {"seconds": 0.3}, uid=uid)
        answer = await client.request("sleep", {"seconds": 0.4}, uid=uid)
    assert answer == {"seconds": 0.4}, "the answer of the cancelled request went to the next one"


async def test_a_timed_out_uid_is_set_aside_before_anyone_reuses_it(
    stream_kind_and_server: tuple[str, object],
) -> None:
    kind, server = stream_kind_and_server
    uid = str(uuid.uuid4())
    async with make_client(kind, server, heartbeat_interval=None) as client:
        await client.request("echo", {"message": "connect first"})

        async def times_out() -> str:
            try:
                await client.request("sleep", {"seconds": 1.0}, uid=uid, timeout=0.3)
            except RequestTimeout as exc:
                return repr(exc)
            return "answered"

        async def reuses_the_uid() -> object:
            await asyncio.sleep(0.29)
            return await client.request("sleep", {"seconds": 0.1}, uid=uid)

        async def busy_loop_turn() -> None:
            await asyncio.sleep(0.25)
            time.sleep(0.1)  # CPU work: the timeout and the next request fall due together

        first = asyncio.ensure_future(times_out())
        second = asyncio.ensure_future(reuses_the_uid())
        await busy_loop_turn()
        assert "RequestTimeout" in await first
        assert await second == {"seconds": 0.1}, "the late answer went to the next request"


async def _unresponsive_listener() -> tuple[int, list[object]]:
    """A listener whose accept queue is full: connection attempts hang until their timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    sockets = [listener]
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(filler)
    await asyncio.sleep(0.2)
    return port, sockets


async def test_concurrent_callers_share_one_connect_attempt() -> None:
    port, sockets = await _unresponsive_listener()
    client = TcpClient("127.0.0.1", port, connect_timeout=0.5, retries=0, heartbeat_interval=None)
    started = time.perf_counter()

    async def one() -> float:
        with pytest.raises(ConnectFailed):
            await client.request("echo", {"message": "x"})
        return time.perf_counter() - started

    try:
        waits = await asyncio.gather(*(one() for _ in range(10)))
    finally:
        await client.close()
        for sock in sockets:
            sock.close()  # type: ignore[attr-defined]
    assert max(waits) < 1.5, f"callers waited one connect timeout after another: {waits}"


async def test_closing_the_client_while_it_connects_fails_the_callers() -> None:
    port, sockets = await _unresponsive_listener()
    client = TcpClient("127.0.0.1", port, connect_timeout=5, heartbeat_interval=None)  # retries on
    try:
        call = asyncio.ensure_future(client.request("echo", {"message": "x"}))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        await client.close()
        with pytest.raises(ClientClosed, match="closed while connecting"):
            await call
        assert time.perf_counter() - started < 1.0
    finally:
        for sock in sockets:
            sock.close()  # type: ignore[attr-defined]


class Named(BaseModel):
    name: str

    @pydantic.model_validator(mode="before")
    @classmethod
    def strip_name(cls, value: dict) -> dict:  # type: ignore[type-arg]
        value["name"] = value["name"].strip()  # KeyError when "name" is missing: a validator bug
        return value


def awkward_registry() -> Registry:
    registry = Registry()

    @endpoint("named", registry=registry)
    async def named(request: Named) -> str:
        return request.name

    @endpoint("slow", registry=registry)
    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "slow"

    @endpoint("inner_cancel", registry=registry)
    async def inner_cancel() -> None:
        doomed = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_later(0.01, doomed.cancel)
        await doomed

    @endpoint("exits", registry=registry)
    async def exits() -> None:
        raise SystemExit("a library called sys.exit")

    @endpoint("posonly", registry=registry)
    async def posonly(request: Echo, /, uid: str) -> str:
        return f"{request.message} {uid}"

    return registry


async def test_handler_and_validator_failures_are_answered_and_the_server_goes_on() -> None:
    router = Router(awkward_registry())
    tcp = TcpServer(router, "127.0.0.1", 0)
    udp = UdpServer(router, "127.0.0.1", 0)
    await tcp.start()
    await udp.start()
    try:
        async with TcpClient("127.0.0.1", tcp.port) as client:
            slow = asyncio.ensure_future(client.request("slow"))  # in flight on the same connection
            for route, data in (("named", {}), ("inner_cancel", None), ("exits", None)):
                with pytest.raises(ProcessingFailed) as info:
                    await client.request(route, data)
                assert info.value.status == 600
            assert await slow == "slow", "the connection must survive every failure"
            assert await client.request("named", {"name": " ok "}) == "ok"
            uid = str(uuid.uuid4())
            assert await client.request("posonly", {"message": "hi"}, uid=uid) == f"hi {uid}"
        async with UdpClient("127.0.0.1", udp.port, retries=0, timeout=2) as client:
            with pytest.raises(ProcessingFailed, match="KeyError"):
                await client.request("named", {})
            assert await client.request("named", {"name": "udp"}) == "udp"
    finally:
        await tcp.close(1)
        await udp.close(1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Task.get_context() is new in Python 3.12")
async def test_a_connection_opened_inside_a_request_does_not_keep_its_uid(tcp_server: TcpServer) -> None:
    from ecosys.tracking import current_uid

    client = TcpClient("127.0.0.1", tcp_server.port, heartbeat_interval=30)
    try:
        with uid_scope(str(uuid.uuid4())):
            await client.request("echo", {"message": "opens the connection"})
        heartbeat = client._heartbeat_task
        assert heartbeat is not None
        assert heartbeat.get_context().get(current_uid) is None, "the heartbeat logs with a request's uid"
    finally:
        await client.close()



async def test_a_connect_nobody_waits_for_any_more_fails_quietly() -> None:
    import gc

    port, sockets = await _unresponsive_listener()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    client = TcpClient("127.0.0.1", port, connect_timeout=0.3, retries=0, heartbeat_interval=None)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # the caller gives up before the connect fails
                await client.request("echo", {"message": "x"})
        await asyncio.sleep(0.4)  # the shared attempt fails with nobody waiting
        await client.close()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        for sock in sockets:
            sock.close()  # type: ignore[attr-defined]
    assert not reported, f"asyncio reported: {reported}"


@pytest.mark.parametrize("kind", ["tcp", "udp"])
async def test_a_call_chain_coming_back_under_one_uid_does_not_hang(kind: str) -> None:
    # A -> B -> A -> B, all under the uid of the first request: the last call
    # shares its uid with the first, still waiting on the same client.
    a_registry, b_registry = Registry(), Registry()
    server_type = TcpServer if kind == "tcp" else UdpServer
    a_server = server_type(Router(a_registry), "127.0.0.1", 0)
    b_server = server_type(Router(b_registry), "127.0.0.1", 0)
    await a_server.start()
    await b_server.start()
    client_type = TcpClient if kind == "tcp" else UdpClient
    to_a = client_type("127.0.0.1", a_server.port, timeout=3, retries=0)
    to_b = client_type("127.0.0.1", b_server.port, timeout=3, retries=0)

    @endpoint("start", registry=a_registry)
    async def start() -> str:
        return "start>" + await to_b.request("first")

    @endpoint("first", registry=b_registry)
    async def first() -> str:
        return "first>" + await to_a.request("back")

    @endpoint("back", registry=a_registry)
    async def back() -> str:
        return "back>" + await to_b.request("last")

    @endpoint("last", registry=b_registry)
    async def last() -> str:
        return "last"

    try:
        async with client_type("127.0.0.1", a_server.port, timeout=5) as caller:
            started = time.monotonic()
            assert await caller.request("start") == "start>first>back>last"
            assert time.monotonic() - started < 1.5, "the chain waited for a timeout"
    finally:
        await to_a.close()
        await to_b.close()
        await a_server.close(1)
        await b_server.close(1)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
async def test_a_handlers_fan_out_under_its_uid_runs_in_parallel(
    kind: str, tcp_server: TcpServer, udp_server: UdpServer
) -> None:
    port = tcp_server.port if kind == "tcp" else udp_server.port
    client_type = TcpClient if kind == "tcp" else UdpClient
    uid = str(uuid.uuid4())  # as inside a handler: every call carries its uid
    async with client_type("127.0.0.1", port, timeout=5) as client:
        await client.request("echo", {"message": "connect first"})
        started = time.monotonic()
        with uid_scope(uid):
            answers = await asyncio.gather(*(client.request("sleep", {"seconds": 0.4}) for _ in range(3)))
        took = time.monotonic() - started
    assert answers == [{"seconds": 0.4}] * 3
    assert took < 0.9, f"three 0.4 s calls under one uid took {took:.2f}s: they ran one after another"


async def test_a_retry_after_a_timeout_waits_for_the_late_answer_first() -> None:
    # The first attempt still runs on the server: the retry must not overtake it
    # (a sequenced sender's next message would, too).
    events: list[str] = []
    registry = Registry()

    @endpoint("slow_once", registry=registry)
    async def slow_once() -> int:
        attempt = len([e for e in events if e.startswith("start")]) + 1
        events.append(f"start {attempt}")
        if attempt == 1:
            await asyncio.sleep(0.45)  # past the timeout, within the window its uid is set aside
        events.append(f"end {attempt}")
        return attempt

    server = TcpServer(Router(registry), "127.0.0.1", 0)
    await server.start()
    try:
        async with TcpClient("127.0.0.1", server.port, timeout=0.3, retries=1, retry_delay=0.01,
                             retry_on_timeout=True) as client:
            assert await client.request("slow_once") == 2
        assert events == ["start 1", "end 1", "start 2", "end 2"], events
    finally:
        await server.close(1)


async def test_extra_connections_for_one_uid_are_few_and_reused(tcp_server: TcpServer) -> None:
    from ecosys.transport.client import MAX_EXTRA_LANES

    async with TcpClient("127.0.0.1", tcp_server.port, timeout=10) as client:
        for _ in range(2):
            with uid_scope():  # one handler's fan-out: twenty calls under its uid
                answers = await asyncio.gather(
                    *(client.request("sleep", {"seconds": 0.05}) for _ in range(20)))
            assert answers == [{"seconds": 0.05}] * 20
            assert len(tcp_server.connections) <= 1 + MAX_EXTRA_LANES, len(tcp_server.connections)
        assert len(tcp_server.connections) == 1 + MAX_EXTRA_LANES, "the lanes are kept for reuse"


async def test_close_fails_requests_on_connections_of_their_own(tcp_server: TcpServer) -> None:
    uid = str(uuid.uuid4())
    client = TcpClient("127.0.0.1", tcp_server.port, timeout=5)
    with uid_scope(uid):
        calls = [asyncio.ensure_future(client.request("sleep", {"seconds": 1})) for _ in range(2)]
    await asyncio.sleep(0.2)  # the second is on a connection of its own
    await client.close()
    for call in calls:
        with pytest.raises(ClientClosed):
            await call


def test_a_client_reused_on_a_new_event_loop_drops_the_old_loops_lanes(tmp_path: Path) -> None:
    from apphelpers import SLOW_SERVER, AppProcess, app_env
    from apphelpers import free_port as free_tcp_port

    port = free_tcp_port()
    env = app_env(ECOENV_DEFAULT_DIR=tmp_path)
    with AppProcess(SLOW_SERVER, ["-i", "1", "--tcp", f"127.0.0.1:{port}"], env, tmp_path) as server:
        server.wait_ready()
        client = TcpClient("127.0.0.1", port, timeout=3)  # a module-level client, say

        async def fan_out() -> list[object]:
            with uid_scope():  # three calls under one uid: two of them on lanes
                return await asyncio.gather(*(client.request("echo", {"message": str(n)}) for n in range(3)))

        for _ in range(2):  # two asyncio.run()s, as a script or a test suite does
            started = time.monotonic()
            assert asyncio.run(fan_out()) == [{"message": str(n)} for n in range(3)]
            assert time.monotonic() - started < 2, "a lane of the closed loop was used"
        assert server.terminate() == 0


async def test_close_while_a_lane_connects_sends_nothing_and_retries_nothing() -> None:
    import socket

    # A listener that never accepts: the shared connection sits in its backlog
    # (connected, never answered), then fillers take the rest, so a further
    # connect (the lane's) hangs until the connect timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    client = TcpClient("127.0.0.1", port, timeout=10, connect_timeout=1.0, retries=3, retry_delay=0.01,
                       heartbeat_interval=None)
    fillers: list[socket.socket] = []
    try:
        uid = str(uuid.uuid4())
        first = asyncio.ensure_future(client.request("echo", {"message": "a"}, uid=uid))
        await asyncio.sleep(0.2)  # connected (in the backlog) and written
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(client.request("echo", {"message": "b"}, uid=uid))
        await asyncio.sleep(0.2)  # its lane is connecting
        started = time.monotonic()
        await client.close()
        with pytest.raises(ClientClosed):
            await first
        with pytest.raises(ClientClosed):
            await second
        assert time.monotonic() - started < 1.8, "the lane's request was retried after close()"
        assert client._connection is None and not client._lanes, "close() left a connection open"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_a_retry_never_overtakes_its_timed_out_attempt_on_a_lane() -> None:
    events: list[str] = []
    registry = Registry()

    @endpoint("hold", registry=registry)
    async def hold() -> None:
        await asyncio.sleep(1.2)  # keeps the uid in flight on the shared connection

    @endpoint("slow_once", registry=registry)
    async def slow_once() -> int:
        attempt = len([e for e in events if e.startswith("start")]) + 1
        events.append(f"start {attempt}")
        if attempt == 1:
            await asyncio.sleep(0.45)
        events.append(f"end {attempt}")
        return attempt

    server = TcpServer(Router(registry), "127.0.0.1", 0)
    await server.start()
    try:
        async with TcpClient("127.0.0.1", server.port, retries=1, retry_delay=0.01,
                             retry_on_timeout=True) as client:
            with uid_scope():
                held = asyncio.ensure_future(client.request("hold", timeout=5))
                await asyncio.sleep(0.05)
                assert await client.request("slow_once", timeout=0.3) == 2  # on a lane, retried
                await held
        assert events == ["start 1", "end 1", "start 2", "end 2"], events
    finally:
        await server.close(1)


async def test_lanes_get_heartbeats_too() -> None:
    enquiries: dict[int, int] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = id(writer)
        enquiries[me] = 0
        while line := await reader.readline():
            if line.strip() == b"\x05":
                enquiries[me] += 1
                writer.write(b"\x06\n")
                continue
            request = orjson.loads(line)
            await asyncio.sleep(0.1)  # long enough for same-uid requests to overlap
            writer.write(orjson.dumps({"uid": request["uid"], "status": 0, "data": request["data"]}) + b"\n")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with TcpClient("127.0.0.1", port, heartbeat_interval=0.2, heartbeat_timeout=1) as client:
            with uid_scope():
                await asyncio.gather(*(client.request("echo", n) for n in range(3)))
            await asyncio.sleep(0.7)
        assert len(enquiries) == 3 and all(count >= 2 for count in enquiries.values()), enquiries
    finally:
        server.close()


async def test_udp_lanes_stay_within_the_cap(udp_server: UdpServer) -> None:
    from ecosys.transport.client import MAX_EXTRA_LANES

    async with UdpClient("127.0.0.1", udp_server.port, timeout=5) as client:
        await client.request("echo", {"message": "warm"})
        with uid_scope():
            answers = await asyncio.gather(*(client.request("sleep", {"seconds": 0.05}) for _ in range(40)))
        assert answers == [{"seconds": 0.05}] * 40
        assert len(client._lanes) <= MAX_EXTRA_LANES



@pytest.mark.parametrize("sent", ["after the window", "while waiting in the window"])
async def test_an_answer_later_than_its_window_never_reaches_a_newer_same_uid_request(
    kind_and_server: tuple[str, object], sent: str,
) -> None:
    # The late answer of a timed-out request is awaited for one more timeout on
    # its connection. A request with the uid sent after that window, or waiting
    # in it when it closes, goes on another connection; the answer, if it still
    # comes, is dropped rather than handed to it.
    kind, server = kind_and_server
    uid = str(uuid.uuid4())
    options: dict[str, object] = {"retries": 0}
    if kind != "udp":
        options["heartbeat_interval"] = None
    async with make_client(kind, server, **options) as client:
        await client.request("echo", {"message": "connect first"})
        with pytest.raises(RequestTimeout):
            # Answered at 0.8 s: after the 0.2 s timeout and the 0.2 s window that follows it.
            await client.request("sleep", {"seconds": 0.8}, uid=uid, timeout=0.2)
        if sent == "after the window":
            await asyncio.sleep(0.3)
        answer = await client.request("sleep", {"seconds": 0.6}, uid=uid, timeout=3)
        assert answer == {"seconds": 0.6}, "the very late answer went to the newer request"
        # The uid is usable again on every connection once the old answer is dropped.
        assert await client.request("sleep", {"seconds": 0.01}, uid=uid) == {"seconds": 0.01}


def test_a_connection_remembers_a_bounded_number_of_overdue_uids() -> None:
    from ecosys.transport.client import MAX_OVERDUE_UIDS, ResponseMatcher

    matcher = ResponseMatcher()
    uids = [str(uuid.uuid4()) for _ in range(MAX_OVERDUE_UIDS + 2)]
    for uid in uids:
        matcher._mark_overdue(uid)
    assert len(matcher.overdue) == MAX_OVERDUE_UIDS
    assert uids[0] not in matcher.overdue and uids[1] not in matcher.overdue
    assert matcher.busy(uids[-1]) and not matcher.busy(uids[0])
    # The overdue answer itself, when it comes, is dropped and frees the uid.
    from ecosys.protocol import Response

    matcher.deliver(Response(uids[-1], 0, "late"))
    assert not matcher.busy(uids[-1])



class Reading(BaseModel):
    # A model that asks pydantic for NaN/Infinity tokens, which are not JSON.
    model_config = pydantic.ConfigDict(ser_json_inf_nan="constants")

    value: float | None


async def test_non_finite_floats_cross_as_null_both_ways(kind_and_server: tuple[str, object],
                                                         router: Router) -> None:
    # Before value_json, the server's answer held a bare NaN: the client's
    # decoder refused the line and dropped the connection with every request on it.
    seen: list[float | None] = []

    @endpoint("reading", registry=router.registry)
    async def reading(request: Reading) -> Reading:
        seen.append(request.value)
        return Reading(value=float("nan"))

    kind, server = kind_and_server
    async with make_client(kind, server, timeout=5) as client:
        answers = await asyncio.gather(
            client.request("reading", Reading(value=float("inf"))),
            client.request("echo", {"message": "still here"}),
        )
    assert answers == [{"value": None}, {"message": "still here"}]
    assert seen == [None]  # the request's infinity arrived as null
