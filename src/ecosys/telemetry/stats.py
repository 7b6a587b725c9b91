"""The statistics keeper: call counts, error counts and latency percentiles, per period.

Recording a call is a few dictionary and list operations (a histogram with
geometric buckets, not a list of samples), so it can sit on every request's
path. Periods roll over every gathering period; the last ``history`` periods
are kept.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

from mypy_extensions import mypyc_attr

# Bucket upper bounds from 1 µs to ~1000 s, each 5% above the one before:
# a percentile read from a bucket is within 5% of the true value.
_RATIO = 1.05
BUCKET_BOUNDS: list[float] = []
_bound = 1e-6
while _bound < 1000:
    BUCKET_BOUNDS.append(_bound)
    _bound *= _RATIO
BUCKET_BOUNDS.append(float("inf"))

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
DEFAULT_GATHERING_PERIOD = 300.0
DEFAULT_HISTORY = 12


class CallStats:
    """Counts and latency histogram of one endpoint (or target) in one period."""

    __slots__ = ("calls", "errors", "buckets", "max", "total")

    def __init__(self) -> None:
        self.calls = 0
        self.errors: dict[int | str, int] = {}
        self.buckets: dict[int, int] = {}
        self.max = 0.0
        self.total = 0.0

    def record(self, status: int | str, seconds: float | None, count: int = 1) -> None:
        """Count *count* calls that ended together with this status and (if measured) duration."""
        self.calls += count
        if status:
            self.errors[status] = self.errors.get(status, 0) + count
        if seconds is not None:
            index = bisect_left(BUCKET_BOUNDS, seconds)
            self.buckets[index] = self.buckets.get(index, 0) + count
            self.total += seconds * count
            if seconds > self.max:
                self.max = seconds

    def percentile(self, fraction: float) -> float | None:
        """The latency below which *fraction* of the timed calls fall (seconds)."""
        timed = sum(self.buckets.values())
        if not timed:
            return None
        rank = fraction * timed
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                # The bucket's upper bound, but never above the largest value seen.
                return min(BUCKET_BOUNDS[index], self.max)
        return self.max

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (latencies in milliseconds)."""
        timed = sum(self.buckets.values())
        latency: dict[str, float | None] = {
            name: _ms(self.percentile(fraction)) for name, fraction in PERCENTILES
        }
        latency["max"] = _ms(self.max) if timed else None
        latency["mean"] = _ms(self.total / timed) if timed else None
        return {
            "calls": self.calls,
            "errors": {str(status): count for status, count in sorted(self.errors.items(), key=str)},
            "latency_ms": latency,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Period:
    """Everything recorded between two roll-overs."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.end: float | None = None
        self.groups: dict[str, dict[str, CallStats]] = {}
        self.custom: dict[str, Any] = {}
        self.queues: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        """A JSON-able view of the period."""
        out: dict[str, Any] = {"start": self.start, "end": self.end}
        for group, calls in sorted(self.groups.items()):
            out[group] = {key: stats.describe() for key, stats in sorted(calls.items())}
        out["queues"] = self.queues
        out["custom"] = nest(self.custom)
        return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1, "a.c": 2}`` into ``{"a": {"b": 1, "c": 2}}``."""
    root: dict[str, Any] = {}
    # Only dicts made here are filled in: a value that is itself a dict belongs
    # to the caller (and to stored periods) and must not be written into.
    made = {id(root)}
    for name in sorted(flat):
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not (isinstance(child, dict) and id(child) in made):
                # A value and a subtree share a name: keep the value under "_".
                child = {} if child is None else {"_": child}
                made.add(id(child))
                node[part] = child
            node = child
        leaf = parts[-1]
        existing = node.get(leaf)
        if isinstance(existing, dict) and id(existing) in made:
            existing["_"] = flat[name]
        else:
            node[leaf] = flat[name]
    return root


@mypyc_attr(allow_interpreted_subclasses=True)
class StatisticsKeeper:
    """Per-period call statistics, custom values and queue sizes of this process."""

    def __init__(
        self, gathering_period: float = DEFAULT_GATHERING_PERIOD, history: int = DEFAULT_HISTORY
    ) -> None:
        self.gathering_period = gathering_period
        self.history: deque[Period] = deque(maxlen=history)
        self.started = time.time()
        self.current = Period(self.started)
        self.custom: dict[str, Any] = {}
        self.queue_sources: dict[str, Callable[[], dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._users = 0  # start() calls not yet matched by stop(): applications sharing this keeper

    # ----- recording (hot path) ------------------------------------------

    def record(
        self, group: str, key: str, status: int | str, seconds: float | None, count: int = 1
    ) -> None:
        """Count a call of *key* (an endpoint, queued handler or send target) in *group*.

        *count* > 1: that many calls that ended together (one group commit).
        """
        calls = self.current.groups.get(group)
        if calls is None:
            calls = self.current.groups[group] = {}
        stats = calls.get(key)
        if stats is None:
            stats = calls[key] = CallStats()
        stats.record(status, seconds, count)

    # ----- custom statistics ---------------------------------------------

    def set(self, name: str, value: Any) -> None:
        """Set custom statistic *name* (dots nest it in the output)."""
        self.custom[name] = value

    def increment(self, name: str, by: float = 1) -> float:
        """Add *by* to custom statistic *name* (missing counts as 0); returns the new value."""
        value = self.custom.get(name, 0) + by
        self.custom[name] = value
        return value

    def decrement(self, name: str, by: float = 1) -> float:
        """Subtract *by* from custom statistic *name*; returns the new value."""
        return self.increment(name, -by)

    def get(self, name: str, default: Any = None) -> Any:
        """The current value of custom statistic *name*."""
        return self.custom.get(name, default)

    # ----- periods -------------------------------------------------------

    def configure(self, gathering_period: float, history: int) -> None:
        """Apply the gathering period (seconds) and history length."""
        self.gathering_period = gathering_period
        self.history = deque(self.history, maxlen=history)

    def rotate(self) -> Period:
        """Close the current period (it becomes the gathered one) and start a new one."""
        now = time.time()
        closed = self.current
        closed.end = now
        closed.custom = dict(self.custom)
        closed.queues = self._queue_sizes()
        self.history.append(closed)
        self.current = Period(now)
        return closed

    def start(self) -> None:
        """Roll periods over every gathering period, on the running loop (until the last stop())."""
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._roll(), name="statistics")

    async def _roll(self) -> None:
        while True:
            await asyncio.sleep(self.gathering_period - (time.time() - self.current.start))
            self.rotate()

    async def stop(self) -> None:
        """Stop rolling periods over once every start() has been matched by a stop()."""
        self._users = max(0, self._users - 1)
        if self._users:
            return  # another application in this process still uses the keeper
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _queue_sizes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, source in self.queue_sources.items():
            try:
                out[name] = source()
            except Exception as exc:  # statistics must never break the caller
                out[name] = {"error": str(exc)}
        return out

    def snapshot(self, kind: str = "current") -> dict[str, Any]:
        """The statistics for ``current``, ``gathered`` (last closed period) or ``full`` history."""
        now = time.time()
        out: dict[str, Any] = {
            "uptime": round(now - self.started, 3),
            "timestamp": now,
            "gathering_period": self.gathering_period,
            "history_length": self.history.maxlen,
        }
        if kind == "current":
            period = self.current.describe()
            period["queues"] = self._queue_sizes()
            period["custom"] = nest(self.custom)
            out["current"] = period
        elif kind == "gathered":
            out["gathered"] = self.history[-1].describe() if self.history else None
        elif kind == "full":
            out["history"] = [p.describe() for p in self.history]
        else:
            raise ValueError(f"unknown statistics type {kind!r}: use current, gathered or full")
        return out

    def reset(self) -> None:
        """Forget everything (tests call this between cases)."""
        self.history.clear()
        self.started = time.time()
        self.current = Period(self.started)
        self.custom.clear()
        self.queue_sources.clear()
        self.gathering_period = DEFAULT_GATHERING_PERIOD
        self.history = deque(maxlen=DEFAULT_HISTORY)
        self._users = 0


stats = StatisticsKeeper()
