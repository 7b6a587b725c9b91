"""Byte-level conformance over real sockets: what a hand-written client sees."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from typing import Any

import orjson
import pytest
from apphelpers import read_response

from ecosys import TcpServer, UdpServer, UdsServer
from ecosys.routing import Router
from ecosys.telemetry.stats import StatisticsKeeper


async def open_stream(server: TcpServer | UdsServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(server, TcpServer):
        return await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20)
    return await asyncio.open_unix_connection(server.path, limit=1 << 20)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> dict:
    writer.write(line + b"\n")
    await writer.drain()
    return orjson.loads(await asyncio.wait_for(reader.readline(), 5))


@pytest.fixture(params=["tcp", "uds"])
def stream_server(request: pytest.FixtureRequest) -> TcpServer | UdsServer:
    return request.getfixturevalue(f"{request.param}_server")


async def test_every_status_on_one_connection(stream_server: TcpServer | UdsServer) -> None:
    reader, writer = await open_stream(stream_server)
    uid = str(uuid.uuid4())
    ok = await roundtrip(reader, writer, b'{"uid":"%s","route_key":"echo","data":{"message":"hi"}}' % uid.encode())
    assert ok == {"uid": uid, "status": 0, "data": {"message": "hi"}}
    assert (await roundtrip(reader, writer, b"this is not json"))["status"] == 100
    assert (await roundtrip(reader, writer, b"[1, 2]"))["status"] == 100
    assert (await roundtrip(reader, writer, b'{"uid":"%s"}' % uid.encode()))["status"] == 100
    assert (await roundtrip(reader, writer, b'{"uid":"bad","route_key":"echo"}')) == {
        "uid": None, "status": 100,
        "data": {"message": "uid is not a UUID string", "details": {"uid": "'bad'"}},
    }
    unknown = await roundtrip(reader, writer, b'{"route_key":"no.such.route"}')
    assert unknown["status"] == 400
    invalid = await roundtrip(reader, writer, b'{"route_key":"echo","data":{"message":[1]}}')
    assert invalid["status"] == 300 and invalid["data"]["details"][0]["loc"] == ["message"]
    failed = await roundtrip(reader, writer, b'{"route_key":"boom"}')
    assert failed["status"] == 600 and "kaboom" in failed["data"]["message"]
    # Still serving after all of that, on the same connection.
    again = await roundtrip(reader, writer, b'{"route_key":"echo","data":{"message":"still here"}}')
    assert again["status"] == 0 and again["data"] == {"message": "still here"}
    writer.close()


async def test_heartbeat_and_blank_lines_and_crlf(stream_server: TcpServer | UdsServer) -> None:
    reader, writer = await open_stream(stream_server)
    writer.write(b"\n\n\x05\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"\x06\n"
    writer.write(b'{"route_key":"echo","data":{"message":"crlf"}}\r\n')
    assert orjson.loads(await asyncio.wait_for(reader.readline(), 5))["data"] == {"message": "crlf"}
    writer.close()


async def test_oversized_line_gets_100_and_close(stream_server: TcpServer | UdsServer) -> None:
    reader, writer = await open_stream(stream_server)
    limit = stream_server.max_message_size
    writer.write(b'{"route_key":"echo","data":{"message":"' + b"a" * (limit + 10))
    await writer.drain()
    resp = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
    assert resp["status"] == 100 and "maximum size" in resp["data"]["message"]
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed the connection
    writer.close()
    # Complete oversized lines are refused the same way.
    reader, writer = await open_stream(stream_server)
    writer.write(b"x" * (limit + 1) + b"\n")
    resp = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
    assert resp["status"] == 100
    writer.close()
    # And a line right at the limit is fine.
    reader, writer = await open_stream(stream_server)
    body = b'{"route_key":"echo","data":{"message":"'
    line = body + b"a" * (limit - len(body) - 3) + b'"}}'
    assert len(line) == limit
    assert (await roundtrip(reader, writer, line))["status"] == 0
    writer.close()


async def test_thousand_back_to_back_requests(stream_server: TcpServer | UdsServer) -> None:
    reader, writer = await open_stream(stream_server)
    uids = [str(uuid.uuid4()) for _ in range(1000)]
    writer.write(b"".join(
        b'{"uid":"%s","route_key":"count","data":{"n":%d}}\n' % (uid.encode(), i)
        for i, uid in enumerate(uids)
    ))
    await writer.drain()
    seen: dict[str, int] = {}
    for _ in uids:
        resp = orjson.loads(await asyncio.wait_for(reader.readline(), 10))
        assert resp["status"] == 0
        seen[resp["uid"]] = seen.get(resp["uid"], 0) + 1
        assert uids[resp["data"]["n"]] == resp["uid"], "response carries another request's data"
    assert set(seen) == set(uids) and set(seen.values()) == {1}
    writer.close()


async def test_transient_client_half_close_gets_answer(stream_server: TcpServer | UdsServer) -> None:
    reader, writer = await open_stream(stream_server)
    writer.write(b'{"route_key":"sleep","data":{"seconds":0.05}}\n')
    writer.write_eof()
    resp = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
    assert resp["status"] == 0
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_garbage_does_not_hurt_server(stream_server: TcpServer | UdsServer) -> None:
    rng = random.Random(1234)
    for _ in range(20):
        reader, writer = await open_stream(stream_server)
        writer.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))))
        writer.close()
    # Abrupt disconnects in the middle of a request that is being handled.
    for _ in range(5):
        reader, writer = await open_stream(stream_server)
        writer.write(b'{"route_key":"sleep","data":{"seconds":0.05}}\n')
        await writer.drain()
        writer.transport.abort()
    await asyncio.sleep(0.2)
    reader, writer = await open_stream(stream_server)
    assert (await roundtrip(reader, writer, b'{"route_key":"echo","data":{"message":"ok"}}'))["status"] == 0
    writer.close()


async def test_stale_uds_socket_is_replaced_and_live_one_refused(router, short_tmp) -> None:  # type: ignore[no-untyped-def]
    from ecosys import ConfigurationError

    path = str(short_tmp / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on, as a killed process leaves it
    server = UdsServer(router, path)
    await server.start()
    try:
        other = UdsServer(router, path)
        with pytest.raises(ConfigurationError, match="in use"):
            await other.start()
    finally:
        await server.close(1)
    assert not os.path.exists(path)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


async def test_udp_with_and_without_newline(udp_server: UdpServer) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=("127.0.0.1", udp_server.port)
    )
    try:
        for suffix in (b"", b"\n"):
            uid = str(uuid.uuid4())
            transport.sendto(b'{"uid":"%s","route_key":"echo","data":{"message":"u"}}' % uid.encode() + suffix)
            resp = orjson.loads(await asyncio.wait_for(proto.queue.get(), 5))
            assert resp == {"uid": uid, "status": 0, "data": {"message": "u"}}
        transport.sendto(b"garbage")
        assert orjson.loads(await asyncio.wait_for(proto.queue.get(), 5))["status"] == 100
        transport.sendto(b"\x05")
        assert await asyncio.wait_for(proto.queue.get(), 5) == b"\x06\n"
        transport.sendto(b'{"route_key":"big","data":{"n":70000}}')
        too_big = orjson.loads(await asyncio.wait_for(proto.queue.get(), 5))
        assert too_big["status"] == 600 and "too large" in too_big["data"]["message"]
    finally:
        transport.close()


async def test_handlers_awaiting_one_shared_future(short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Handlers start eagerly; several suspending on the same future must all resume."""
    from ecosys import Registry, endpoint
    from ecosys.routing import Router

    registry = Registry()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @endpoint("wait", registry=registry)
    async def wait() -> str:
        return await gate

    server = UdsServer(Router(registry), str(short_tmp / "g.sock"))
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(b'{"route_key":"wait"}\n' * 20)  # one read: 20 eager starts
        await writer.drain()
        await asyncio.sleep(0.1)
        gate.set_result("open")
        answers = [orjson.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(20)]
        assert [a["status"] for a in answers] == [0] * 20 and {a["data"] for a in answers} == {"open"}
        writer.close()
    finally:
        await server.close(1)


async def test_handlers_run_inside_a_task_from_their_first_line(short_tmp) -> None:  # type: ignore[no-untyped-def]
    """asyncio.timeout() and current_task() work in a handler before it first awaits, on TCP and UDP."""
    from ecosys import Registry, TcpServer, UdpServer, endpoint
    from ecosys.routing import Router

    registry = Registry()

    @endpoint("timed", registry=registry)
    async def timed() -> dict[str, bool]:
        in_task = asyncio.current_task() is not None
        async with asyncio.timeout(0.05):  # raises RuntimeError outside a task
            await asyncio.sleep(5)
        return {"in_task": in_task}  # not reached: the timeout expires

    @endpoint("quick", registry=registry)
    async def quick() -> dict[str, bool]:
        async with asyncio.timeout(1):  # entered in the handler's first step
            await asyncio.sleep(0)
        return {"in_task": asyncio.current_task() is not None}

    router = Router(registry)
    tcp = TcpServer(router, "127.0.0.1", 0)
    await tcp.start()
    udp = UdpServer(router, "127.0.0.1", 0)
    await udp.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
        u1, u2, u3 = (str(uuid.uuid4()) for _ in range(3))
        writer.write(f'{{"uid":"{u1}","route_key":"quick"}}\n{{"uid":"{u2}","route_key":"timed"}}\n'.encode())
        answers = {}
        for _ in range(2):
            answer = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
            answers[answer["uid"]] = answer
        assert answers[u1]["status"] == 0 and answers[u1]["data"] == {"in_task": True}
        # The handler's own timeout fired (TimeoutError, so 600), not a RuntimeError at its start.
        assert answers[u2]["status"] == 600 and "TimeoutError" in str(answers[u2]["data"])
        writer.close()

        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Datagrams, remote_addr=("127.0.0.1", udp.port))
        try:
            transport.sendto(f'{{"uid":"{u3}","route_key":"quick"}}'.encode())
            answer = orjson.loads(await asyncio.wait_for(proto.queue.get(), 5))
            assert answer["status"] == 0 and answer["data"] == {"in_task": True}
        finally:
            transport.close()
    finally:
        await tcp.close(1)
        await udp.close()


async def test_half_close_after_a_request_that_suspends_once_gets_answer(
    stream_server: TcpServer | UdsServer,
) -> None:
    # The handler finishes in the loop iteration that reads the EOF: its response
    # is gathered, not yet written, when the connection is about to close.
    for _ in range(10):
        reader, writer = await open_stream(stream_server)
        writer.write(b'{"route_key":"sleep","data":{"seconds":0}}\n')
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.endswith(b"\n") and orjson.loads(answer)["status"] == 0, answer
        writer.close()


async def test_unterminated_bytes_at_eof_get_100_and_the_connection_closes(
    stream_server: TcpServer | UdsServer,
) -> None:
    reader, writer = await open_stream(stream_server)
    writer.write(b'{"route_key":"sleep","data":{"seconds":0.1}}\n{"route_k')
    writer.write_eof()
    lines = (await asyncio.wait_for(reader.read(), 5)).splitlines()
    answers = [orjson.loads(line) for line in lines]
    assert len(answers) == 2, answers
    error = next(a for a in answers if a["status"] != 0)
    assert error["status"] == 100 and error["uid"] is None
    assert error["data"]["details"] == {"unterminated_bytes": 9}
    assert "newline" in error["data"]["message"]
    assert any(a["status"] == 0 and a["data"] == {"seconds": 0.1} for a in answers)
    writer.close()
    for _ in range(100):  # the server closed its side and forgot the connection
        if not stream_server.connections:
            break
        await asyncio.sleep(0.02)
    assert not stream_server.connections, "the connection is still open on the server"


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_udp_port_in_use_says_why_on_every_loop(tmp_path, loop_kind) -> None:  # type: ignore[no-untyped-def]
    import uvloop

    from ecosys import Application, ConfigurationError, Registry

    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    app = Application("busy_udp", instance="0", registry=Registry(),
                      config={"udp": f"127.0.0.1:{port}", "default_dir": str(tmp_path)})
    app.configure(argv=[], environ={})

    async def start() -> None:
        with pytest.raises(ConfigurationError) as info:
            await app.start()
        assert str(info.value) == f"cannot listen on udp://127.0.0.1:{port}: Address already in use"

    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(start())
    finally:
        busy.close()


async def test_a_draining_uds_server_leaves_the_socket_of_the_one_that_replaced_it(  # type: ignore[no-untyped-def]
    router, short_tmp
) -> None:
    from ecosys import UdsClient

    path = str(short_tmp / "shared.sock")
    old = UdsServer(router, path)
    await old.start()
    async with UdsClient(path, timeout=5) as client:
        slow = asyncio.ensure_future(client.request("sleep", {"seconds": 0.5}))
        await asyncio.sleep(0.1)
        draining = asyncio.ensure_future(old.close(grace=5))  # stops listening, drains the slow one
        await asyncio.sleep(0.1)
        new = UdsServer(router, path)  # a new instance takes the path over meanwhile
        await new.start()
        assert await slow == {"seconds": 0.5}
        await draining
    try:
        assert os.path.exists(path), "the old server removed the new one's socket file"
        async with UdsClient(path, timeout=5) as client:
            assert await client.request("echo", {"message": "still here"}) == {"message": "still here"}
    finally:
        await new.close(1)
    assert not os.path.exists(path)


async def test_a_lone_request_is_answered_before_the_servers_bookkeeping(
    stream_server: TcpServer | UdsServer, router: Router, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server's statistics recording is made to block its event loop for a
    # while; a client in another thread must get its answer before that ends,
    # because the response of a read holding one request is sent first.
    block = 0.5

    class SlowKeeper(StatisticsKeeper):
        def record(self, *args: Any, **kwargs: Any) -> None:
            super().record(*args, **kwargs)
            time.sleep(block)

    monkeypatch.setattr(router, "stats", SlowKeeper())
    uid = str(uuid.uuid4())
    line = b'{"uid":"%s","route_key":"echo","data":{"message":"quick"}}\n' % uid.encode()

    def client() -> tuple[dict, float]:
        if isinstance(stream_server, TcpServer):
            sock = socket.create_connection(("127.0.0.1", stream_server.port), timeout=5)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(5)
            sock.connect(stream_server.path)
        with sock:
            sock.sendall(line)
            started = time.monotonic()
            return read_response(sock, timeout=5), time.monotonic() - started

    answer, waited = await asyncio.to_thread(client)
    assert answer == {"uid": uid, "status": 0, "data": {"message": "quick"}}
    assert waited < block / 2, f"the answer waited {waited:.3f}s for the bookkeeping"
