"""``LRUCache``: a bounded least-recently-used cache for asyncio code.

Besides plain ``get``/``set`` it can load missing values with a coroutine,
and concurrent callers asking for the same missing key share one load
instead of stampeding the service or database behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from .tasks import retrieve_exception

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: Any = object()


class LRUCache(Generic[K, V]):
    """At most *maxsize* entries; the least recently used goes first.

    *ttl* (seconds) makes entries expire; *clock* is the time source (tests
    pass their own). ``hits`` and ``misses`` count lookups.
    """

    def __init__(
        self, maxsize: int = 1024, *, ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[V, float | None]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: K, default: Any = None) -> Any:
        """The value for *key* (now the most recently used), or *default*."""
        item = self._data.get(key)
        if item is None or (item[1] is not None and item[1] <= self._clock()):
            if item is not None:
                del self._data[key]  # expired
            self.misses += 1
            return default
        self._data.move_to_end(key)
        self.hits += 1
        return item[0]

    def set(self, key: K, value: V) -> None:
        """Store *value*, evicting the least recently used if full; a running load of *key* is not stored."""
        # That load began before this value was known: storing its result would
        # replace the newer value with an older one.
        self._loading.pop(key, None)
        self._store(key, value)

    def _store(self, key: K, value: V) -> None:
        expires = None if self.ttl is None else self._clock() + self.ttl
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def delete(self, key: K) -> bool:
        """Remove *key*; True if it was there. A load of it in progress is not stored."""
        # The value may have changed since that load started: its result must not
        # become the cached value, and new callers must start a fresh load.
        self._loading.pop(key, None)
        return self._data.pop(key, None) is not None

    def clear(self) -> None:
        """Remove every entry (loads in progress finish for their callers but are not stored)."""
        self._loading.clear()
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        item = self._data.get(key)  # type: ignore[arg-type]
        return item is not None and (item[1] is None or item[1] > self._clock())

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of ``await load()`` (stored) if missing.

        Concurrent callers for the same missing key await one load. If the load
        raises, every one of them gets the exception and nothing is stored. A
        caller that is cancelled does not cancel the load for the others.
        """
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, load))
            # If every waiter was cancelled nobody awaits a failure, and asyncio
            # would log it as "Task exception was never retrieved".
            pending.add_done_callback(retrieve_exception)
            self._loading[key] = pending
        return await asyncio.shield(pending)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        this = asyncio.current_task()
        try:
            value = await load()
            if self._loading.get(key) is this:  # not dropped by set(), delete() or clear() meanwhile
                self._store(key, value)
            return value
        finally:
            if self._loading.get(key) is this:
                del self._loading[key]

    def cached(
        self, key: Callable[..., K] | None = None
    ) -> Callable[[Callable[..., Awaitable[V]]], Callable[..., Awaitable[V]]]:
        """Decorate an async function so its results are cached here.

        The cache key is ``key(*args, **kwargs)``, by default the arguments themselves.
        """

        def decorate(func: Callable[..., Awaitable[V]]) -> Callable[..., Awaitable[V]]:
            async def wrapper(*args: Any, **kwargs: Any) -> V:
                cache_key: Any = key(*args, **kwargs) if key else (args, tuple(sorted(kwargs.items())))
                return await self.get_or_load(cache_key, lambda: func(*args, **kwargs))

            wrapper.__name__ = getattr(func, "__name__", "cached")
            wrapper.__doc__ = func.__doc__
            wrapper.cache = self  # type: ignore[attr-defined]
            return wrapper

        return decorate
