"""LRUCache: eviction, expiry, shared loads, failures and cancellation."""

from __future__ import annotations

import asyncio
import gc

import pytest

from ecosys import LRUCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_is_evicted() -> None:
    cache: LRUCache[str, int] = LRUCache(maxsize=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.set("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2 and cache.hits == 3 and cache.misses == 0
    assert cache.get("b", "gone") == "gone" and cache.misses == 1
    assert cache.delete("a") and not cache.delete("a")
    cache.clear()
    assert len(cache) == 0


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache: LRUCache[str, int] = LRUCache(ttl=10, clock=clock)
    cache.set("a", 1)
    clock.now = 9.9
    assert cache.get("a") == 1 and "a" in cache
    clock.now = 10.0
    assert "a" not in cache and cache.get("a") is None and len(cache) == 0


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        LRUCache(maxsize=0)
    with pytest.raises(ValueError):
        LRUCache(ttl=0)


async def test_concurrent_misses_share_one_load() -> None:
    cache: LRUCache[str, str] = LRUCache()
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return "value"

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100)))
    assert results == ["value"] * 100 and loads == 1
    assert await cache.get_or_load("k", load) == "value" and loads == 1  # now a hit


async def test_failed_load_reaches_every_caller_and_is_not_stored() -> None:
    cache: LRUCache[str, str] = LRUCache()

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise LookupError("backend down")

    results = await asyncio.gather(*(cache.get_or_load("k", broken) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert "k" not in cache

    async def fixed() -> str:
        return "ok"

    assert await cache.get_or_load("k", fixed) == "ok"


async def test_cancelled_caller_does_not_cancel_the_load() -> None:
    cache: LRUCache[str, str] = LRUCache()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(cache.get_or_load("k", slow))
    second = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "done"
    assert cache.get("k") == "done"


async def test_cached_decorator() -> None:
    cache: LRUCache[object, int] = LRUCache(maxsize=10)
    calls = 0

    @cache.cached()
    async def square(x: int) -> int:
        nonlocal calls
        calls += 1
        return x * x

    assert [await square(3), await square(3), await square(4)] == [9, 9, 16] and calls == 2

    @cache.cached(key=lambda user_id, **_: ("user", user_id))
    async def user(user_id: int, *, verbose: bool = False) -> int:
        return user_id

    assert await user(7) == 7 and await user(7, verbose=True) == 7 and ("user", 7) in cache


async def test_a_load_running_when_its_key_is_deleted_is_not_stored() -> None:
    cache: LRUCache[str, int] = LRUCache(maxsize=10)
    backend = {"k": 1}
    release, started = asyncio.Event(), asyncio.Event()

    async def load() -> int:
        value = backend["k"]
        started.set()
        await release.wait()
        return value

    first = asyncio.ensure_future(cache.get_or_load("k", load))
    await started.wait()
    backend["k"] = 2
    cache.delete("k")  # we learn the value changed while the old load still runs
    release.set()
    assert await first == 1  # its caller still gets what it loaded
    assert cache.get("k") is None, "the old value was stored after the delete"
    assert await cache.get_or_load("k", load) == 2


async def test_a_value_set_while_its_key_loads_is_not_overwritten_by_the_load() -> None:
    cache: LRUCache[str, str] = LRUCache(maxsize=10)
    release, started = asyncio.Event(), asyncio.Event()

    async def load() -> str:
        started.set()
        await release.wait()
        return "loaded before the set"

    first = asyncio.ensure_future(cache.get_or_load("k", load))
    await started.wait()
    cache.set("k", "set during the load")
    release.set()
    assert await first == "loaded before the set"  # its caller still gets what it loaded
    assert cache.get("k") == "set during the load", "the older loaded value replaced the set one"


async def test_a_failed_load_whose_only_caller_was_cancelled_is_not_reported_unretrieved() -> None:
    cache: LRUCache[str, str] = LRUCache()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    started = asyncio.Event()

    async def broken() -> str:
        started.set()
        await asyncio.sleep(0.01)
        raise LookupError("backend down")

    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        caller = asyncio.ensure_future(cache.get_or_load("k", broken))
        await started.wait()
        caller.cancel()
        await asyncio.sleep(0.05)
        del caller
        gc.collect()  # an unretrieved exception is reported when its task is collected
    finally:
        loop.set_exception_handler(previous)
    assert not reported, reported
    assert "k" not in cache
