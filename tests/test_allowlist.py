"""The allowlist: peers outside it get status 200 and nothing else, over TCP and UDP."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from ecosys import ConfigurationError, Router, TcpServer, UdpServer
from ecosys.config import load_settings
from ecosys.transport.allow import Allowlist


def test_allowlist_matches_addresses_and_networks() -> None:
    allow = Allowlist(["10.0.0.0/8", "127.0.0.1", "::1"])
    assert allow.allows("10.1.2.3") and allow.allows("127.0.0.1") and allow.allows("::1")
    assert allow.allows("::ffff:127.0.0.1"), "IPv4-mapped IPv6 peers match their IPv4 network"
    assert not allow.allows("127.0.0.2") and not allow.allows("192.168.1.1")
    assert not allow.allows("not-an-address")


def test_allow_setting_from_environment_and_errors() -> None:
    settings = load_settings("app", "1", environ={"ECOENV_ALLOW_APP_1": "127.0.0.1, 10.0.0.0/8"})
    assert settings.allow == ["127.0.0.1/32", "10.0.0.0/8"]
    assert load_settings("app", "1", environ={}).allow is None
    with pytest.raises(ConfigurationError, match="ECOENV_ALLOW.*'nonsense' is not an IP"):
        load_settings("app", "1", environ={"ECOENV_ALLOW": "nonsense"})


@pytest.mark.parametrize("first_line", [b'{"route_key":"echo","data":{"message":"hi"}}\n', b"\x05\n"],
                         ids=["request", "heartbeat"])
@pytest.mark.parametrize("networks, allowed", [(["10.0.0.0/8"], False), (["127.0.0.0/8"], True)])
async def test_tcp_peer_outside_the_list_is_denied(router: Router, networks: list[str],
                                                   allowed: bool, first_line: bytes) -> None:
    server = TcpServer(router, "127.0.0.1", 0, allow=Allowlist(networks))
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(first_line)
        line = await asyncio.wait_for(reader.readline(), 5)
        if allowed and first_line == b"\x05\n":
            assert line == b"\x06\n"
        elif allowed:
            assert orjson.loads(line)["status"] == 0
        else:
            # A heartbeat too, as over UDP: a denied peer learns only that it is denied.
            answer = orjson.loads(line)
            assert answer["status"] == 200 and "127.0.0.1 is not allowed" in answer["data"]["message"]
            assert await asyncio.wait_for(reader.read(), 5) == b"", "a denied peer is disconnected"
        writer.close()
    finally:
        await server.close(1)


async def test_udp_peer_outside_the_list_is_denied(router: Router) -> None:
    server = UdpServer(router, "127.0.0.1", 0, allow=Allowlist(["192.168.0.0/16"]))
    await server.start()
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Receiver, remote_addr=("127.0.0.1", server.port))
    try:
        transport.sendto(b'{"route_key":"echo","data":{"message":"hi"}}')
        answer = orjson.loads(await asyncio.wait_for(answers.get(), 5))
        assert answer["status"] == 200 and answer["uid"] is not None
    finally:
        transport.close()
        await server.close(1)


async def test_application_applies_its_allow_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ecosys import Application, ClientDenied, Registry, TcpClient, endpoint

    registry = Registry()

    @endpoint("hello", registry=registry)
    async def hello() -> str:
        return "hi"

    app = Application("allowapp", instance="1", registry=registry,
                      config={"tcp": "127.0.0.1:0", "default_dir": str(tmp_path),
                              "allow": ["10.0.0.0/8"]})
    app.configure(argv=[], environ={})
    await app.start()
    try:
        async with TcpClient("127.0.0.1", app.servers[0].port, retries=0) as client:
            with pytest.raises(ClientDenied, match="not allowed"):
                await client.request("hello")
    finally:
        await app.stop()
