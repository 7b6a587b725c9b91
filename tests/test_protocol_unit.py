"""Protocol and routing without sockets: bytes in, bytes out."""

from __future__ import annotations

import os
import uuid

import orjson
import pydantic_core
import pytest
from pydantic import BaseModel, ConfigDict

from ecosys import ConfigurationError, Registry, Reject, Router, endpoint
from ecosys.protocol import (
    decode_request,
    encode_request,
    encode_request_json,
    encode_success_json,
    value_json,
)


async def answer(router: Router, obj: object) -> dict:
    line = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    out = await router.handle(line)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return orjson.loads(out)


async def test_success_echoes_uid(router: Router) -> None:
    uid = str(uuid.uuid4())
    resp = await answer(router, {"uid": uid, "route_key": "echo", "data": {"message": "hi"}})
    assert resp == {"uid": uid, "status": 0, "data": {"message": "hi"}}


async def test_missing_uid_gets_fresh_one(router: Router) -> None:
    resp = await answer(router, {"route_key": "echo", "data": {"message": "hi"}})
    assert resp["status"] == 0
    uuid.UUID(resp["uid"])


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1,2,3]", b'"str"', b'{"uid": "%s"}' % str(uuid.uuid4()).encode(),
     b'{"uid": "nope", "route_key": "echo"}', b'{"route_key": 5}', b"\xff\xfe"],
)
async def test_protocol_errors_are_100(router: Router, line: bytes) -> None:
    resp = await answer(router, line)
    assert resp["status"] == 100
    assert isinstance(resp["data"]["message"], str) and resp["data"]["message"]


async def test_unknown_route_is_400(router: Router) -> None:
    resp = await answer(router, {"uid": str(uuid.uuid4()), "route_key": "nope"})
    assert resp["status"] == 400 and "nope" in resp["data"]["message"]


async def test_validation_error_is_300_with_field_errors(router: Router) -> None:
    resp = await answer(router, {"route_key": "echo", "data": {"message": 5}})
    assert resp["status"] == 300
    details = resp["data"]["details"]
    assert details[0]["loc"] == ["message"] and details[0]["type"] == "string_type"
    resp = await answer(router, {"route_key": "echo", "data": "not an object"})
    assert resp["status"] == 300


async def test_handler_exception_is_600(router: Router) -> None:
    resp = await answer(router, {"route_key": "boom"})
    assert resp["status"] == 600 and "kaboom" in resp["data"]["message"]


async def test_reject_chooses_status() -> None:
    registry = Registry()

    @endpoint("busy", registry=registry)
    async def busy() -> None:
        raise Reject(500, "try later", {"retry_in": 1})

    resp = await answer(Router(registry), {"route_key": "busy"})
    assert resp["status"] == 500 and resp["data"] == {"message": "try later", "details": {"retry_in": 1}}


async def test_uid_parameter_as_uuid_and_no_data() -> None:
    registry = Registry()

    @endpoint("id", registry=registry)
    async def ident(uid: uuid.UUID) -> dict:
        assert isinstance(uid, uuid.UUID)
        return {"uid": str(uid)}

    uid = str(uuid.uuid4())
    resp = await answer(Router(registry), {"uid": uid, "route_key": "id"})
    assert resp["data"] == {"uid": uid}


def test_duplicate_route_key_rejected() -> None:
    registry = Registry()

    @endpoint("x", registry=registry)
    async def one() -> None: ...

    with pytest.raises(ConfigurationError, match="duplicate route key 'x'"):

        @endpoint("x", registry=registry)
        async def two() -> None: ...


def test_bad_handlers_rejected() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="async"):
        endpoint("sync", registry=registry)(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="annotation"):

        @endpoint("unannotated", registry=registry)
        async def unannotated(request) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(ConfigurationError, match="reserved"):

        @endpoint("eco.mine", registry=registry)
        async def mine() -> None: ...


def test_envelope_bytes_exact() -> None:
    uid = "0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11"
    assert encode_request(uid, "echo", {"message": "hi"}) == (
        b'{"uid":"0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11","route_key":"echo",'
        b'"data":{"message":"hi"}}\n'
    )
    assert encode_success_json(uid, b"null") == (
        b'{"uid":"0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11","status":0,"data":null}\n'
    )
    req = decode_request(b'{"uid":"%s","route_key":"r"}' % uid.encode())
    assert (req.uid, req.route_key, req.data) == (uid, "r", None)


class Point(BaseModel):
    x: int = 0
    y: int = 0


async def test_model_with_defaults_accepts_missing_data() -> None:
    registry = Registry()

    @endpoint("p", registry=registry)
    async def p(request: Point) -> Point:
        return request

    resp = await answer(Router(registry), {"route_key": "p"})
    assert resp["status"] == 0 and resp["data"] == {"x": 0, "y": 0}


def test_line_splitter_chunks_and_limits() -> None:
    from ecosys.protocol import LineSplitter

    splitter = LineSplitter(10)
    assert splitter.feed(b"ab") == ([], False)
    assert splitter.feed(b"c\nde\nf") == ([b"abc", b"de"], False)
    assert splitter.pending == 1
    assert splitter.feed(b"g\n") == ([b"fg"], False)
    assert splitter.feed(b"0123456789\n") == ([b"0123456789"], False)
    assert splitter.feed(b"ok\n0123456789X\n") == ([b"ok"], True)
    assert splitter.pending == 0
    assert splitter.feed(b"01234") == ([], False)
    assert splitter.feed(b"567890") == ([], True)
    # A large message in many chunks is reassembled exactly.
    big = LineSplitter(1 << 22)
    payload = bytes(range(256)).replace(b"\n", b"") * 8000
    for i in range(0, len(payload), 4096):
        assert big.feed(payload[i:i + 4096]) == ([], False)
    assert big.feed(b"\n") == ([payload], False)


async def test_nan_and_infinity_are_sent_as_null() -> None:
    registry = Registry()

    @endpoint("odd", registry=registry)
    async def odd() -> dict:
        return {"nan": float("nan"), "inf": float("inf")}

    resp = await answer(Router(registry), {"route_key": "odd"})
    assert resp["status"] == 0 and resp["data"] == {"nan": None, "inf": None}


@pytest.mark.parametrize("uid", [" 0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11", "0b8e2a102b6a4d7e9a553c2b1f0e9d11",
                                 "{0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11}",
                                 "\n0b8e2a102b6a4d7e9a553c2b1f0e9d1", "0b8e2a10-2b6a-4d7e-9a55-3c2b1f0e9d11\n"])
async def test_only_canonical_uids_accepted(router: Router, uid: str) -> None:
    resp = await answer(router, {"uid": uid, "route_key": "echo", "data": {"message": "x"}})
    assert resp["status"] == 100 and resp["uid"] is None


async def test_uppercase_uid_is_echoed_as_sent(router: Router) -> None:
    uid = "0B8E2A10-2B6A-4D7E-9A55-3C2B1F0E9D11"
    resp = await answer(router, {"uid": uid, "route_key": "echo", "data": {"message": "x"}})
    assert resp["status"] == 0 and resp["uid"] == uid


class Item(BaseModel):
    name: str


async def test_handler_signatures_all_receive_their_arguments() -> None:
    registry = Registry()

    @endpoint("plain", registry=registry)
    async def plain(request: Item) -> str:
        return request.name

    @endpoint("keyword_only", registry=registry)
    async def keyword_only(*, request: Item) -> str:
        return request.name

    @endpoint("uid_first", registry=registry)
    async def uid_first(uid: str, request: Item) -> str:
        return f"{uid}:{request.name}"

    @endpoint("uid_last", registry=registry)
    async def uid_last(request: Item, uid: str) -> str:
        return f"{request.name}:{uid}"

    @endpoint("nothing", registry=registry)
    async def nothing() -> str:
        return "none"

    router = Router(registry)
    uid = str(uuid.uuid4())
    data = {"name": "x"}
    expected = {"plain": "x", "keyword_only": "x", "uid_first": f"{uid}:x",
                "uid_last": f"x:{uid}", "nothing": "none"}
    for route, value in expected.items():
        resp = await answer(router, {"uid": uid, "route_key": route, "data": data})
        assert resp == {"uid": uid, "status": 0, "data": value}, route


def test_encode_request_json_escapes_the_route_key() -> None:
    uid = str(uuid.uuid4())
    line = encode_request_json(uid, 'odd "key"\n', b'{"n":1}')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = decode_request(line[:-1])
    assert (request.uid, request.route_key, request.data) == (uid, 'odd "key"\n', {"n": 1})


def test_new_uids_are_random_version_4_uuids_across_batches() -> None:
    from ecosys.protocol import new_uid
    uids = [new_uid() for _ in range(2000)]  # many batches of 128
    assert len(set(uids)) == len(uids)
    for uid in uids:
        parsed = uuid.UUID(uid)
        assert str(parsed) == uid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every free digit is random: no place is stuck (a digit left from the template).
    places = [i for i in range(36) if i not in (8, 13, 14, 18, 19, 23)]
    for place in places:
        assert len({uid[place] for uid in uids}) >= 12, place
    assert {uid[14] for uid in uids} == {"4"}
    assert {uid[19] for uid in uids} == set("89ab")


def test_new_uid_from_many_threads_never_repeats() -> None:
    import threading

    from ecosys.protocol import new_uid
    results: list[list[str]] = [[] for _ in range(8)]

    def take(into: list[str]) -> None:
        for _ in range(3000):
            into.append(new_uid())

    threads = [threading.Thread(target=take, args=(into,)) for into in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [uid for into in results for uid in into]
    assert len(every) == 24_000 and len(set(every)) == 24_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_uids() -> None:
    from ecosys.protocol import new_uid
    new_uid()  # the parent now holds a partly used batch
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the next uids it would hand out
        os.close(read_end)
        os.write(write_end, " ".join(new_uid() for _ in range(50)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = {new_uid() for _ in range(200)}
    assert len(child) == 50 and not child & parent


class _ConstantsModel(BaseModel):
    # Asks pydantic to write NaN/Infinity tokens, which are not JSON.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    x: float
    xs: list[float] = []
    label: str = ""
    big: int = 0


def test_value_json_turns_non_finite_floats_into_null_even_for_constants_models() -> None:
    model = _ConstantsModel(x=float("nan"), xs=[1.5, float("inf"), float("-inf")],
                            label="NaN and Infinity", big=2**70)
    data = value_json(model)
    # orjson refuses NaN/Infinity tokens: this is strict JSON.
    assert orjson.loads(data) == {"x": None, "xs": [1.5, None, None],
                                  "label": "NaN and Infinity", "big": 2**70}
    assert value_json([model])[:1] == b"["
    assert orjson.loads(value_json([model]))[0]["x"] is None


def test_value_json_leaves_finite_values_and_look_alike_strings_alone() -> None:
    model = _ConstantsModel(x=2.5, label="NaN Infinity", big=-(2**70))
    assert value_json(model) == pydantic_core.to_json(model)
    assert value_json({"a": float("nan")}) == b'{"a":null}'
