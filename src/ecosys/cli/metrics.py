"""Prometheus exposition of ecosys services: a collector that asks every target at each scrape.

:class:`EcosysCollector` is a prometheus_client custom collector. Each
``collect()`` (one scrape) fetches ``eco.statistics.get`` (current period)
and ``eco.error_states.get`` from every target concurrently, on a fresh
event loop, and turns the answers into metric families. A target that does
not answer, or answers with a shape no ecosys service sends, gives
``ecosys_up 0`` and no other samples; the scrape goes on.

Call and error counts are kept growing across the services' statistics
period roll-overs for as long as the collector lives (:class:`RunningTotals`);
latency quantiles, queue sizes and custom statistics are what the service
reports now.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import signal
import sys
import threading
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from types import FrameType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import parse_host_port
from ..errors import EcosysError, ResponseError
from .core import (
    DEFAULT_TIMEOUT,
    describe_response_error,
    describe_transport_error,
    make_client,
    one_line,
    usage_error,
)

T = TypeVar("T")

QUANTILES = (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"))

# Call groups of the statistics keeper: metric name prefix and label names for the group's keys.
_GROUP_METRICS: dict[str, tuple[str, str]] = {
    "endpoints": ("ecosys_endpoint", "endpoint"),
    "queued_handlers": ("ecosys_queued_handler", "queue"),
    "senders": ("ecosys_sender", "target"),
}
_PERIOD_KEYS = {"start", "end", "queues", "custom"}


@dataclass(frozen=True)
class ScrapeTarget:
    """A service to scrape: its ``service`` label and its URL."""

    service: str
    url: str


def parse_scrape_target(text: str) -> ScrapeTarget:
    """``URL`` or ``NAME=URL`` (NAME becomes the ``service`` label); a bad URL is a usage error."""
    name, sep, rest = text.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        service, url = name, rest
    else:
        service, url = text, text
    make_client(url)  # validates the URL
    return ScrapeTarget(service, url)


@dataclass
class Scrape:
    """What one target answered (or why it did not)."""

    target: ScrapeTarget
    up: bool = False
    statistics: dict[str, Any] | None = None
    error_states: dict[str, Any] | None = None
    closed_periods: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0
    # Call counts to expose: the current period's plus what closed periods carried over.
    calls: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view for ``eco metrics --json``."""
        return {
            "service": self.target.service, "url": self.target.url, "up": self.up,
            "error": self.error, "notes": self.notes, "scrape_seconds": round(self.duration, 6),
            "statistics": self.statistics, "error_states": self.error_states,
        }


def mark_unexpected(result: Scrape, exc: Exception) -> None:
    """Report the target of *result* as down: its answer has a shape no ecosys service sends."""
    result.up = False
    result.notes.clear()  # about its other answers, which no longer matter: one line per down target
    result.error = one_line(f"unexpected answer ({type(exc).__name__}: {exc}); is it an ecosys service "
                            "of a compatible version?")


def service_start(snapshot: dict[str, Any]) -> float | None:
    """When the service's statistics keeper started (timestamp minus uptime)."""
    timestamp, uptime = snapshot.get("timestamp"), snapshot.get("uptime")
    if isinstance(timestamp, (int, float)) and isinstance(uptime, (int, float)):
        return float(timestamp) - float(uptime)
    return None


def period_start(snapshot: dict[str, Any]) -> float | None:
    """Start of the snapshot's current period."""
    current = snapshot.get("current")
    start = current.get("start") if isinstance(current, dict) else None
    return float(start) if isinstance(start, (int, float)) else None


class RunningTotals:
    """Call and error counts of one service carried over from its closed statistics periods.

    The counts of ``eco.statistics.get {"type": "current"}`` start again from
    zero at every period roll-over. To expose counters that only ever grow
    (as Prometheus expects), a long-running collector remembers which period
    it saw last; when a new one has begun it reads the closed periods
    (``{"type": "full"}``) and adds their final counts to what it carries.
    A service restart starts the totals afresh, which Prometheus handles as
    a counter reset.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.period_start: float | None = None
        self.carried: dict[str, dict[str, dict[str, Any]]] = {}

    def same_service(self, snapshot: dict[str, Any]) -> bool:
        """True when *snapshot* comes from the process seen last time (not restarted)."""
        started = service_start(snapshot)
        return self.started is not None and started is not None and abs(started - self.started) < 1.0

    def rolled_over_since(self, snapshot: dict[str, Any]) -> float | None:
        """The start of the period seen last, when the service has rolled over since then."""
        start = period_start(snapshot)
        if self.same_service(snapshot) and self.period_start is not None and start != self.period_start:
            return self.period_start
        return None

    def update(self, snapshot: dict[str, Any], closed: list[dict[str, Any]]) -> None:
        """Carry the final counts of the *closed* periods; start afresh after a restart."""
        if not self.same_service(snapshot):
            self.carried = {}
        for period in closed:
            for group, calls in period.items():
                if group in _PERIOD_KEYS or not isinstance(calls, dict):
                    continue
                for key, entry in calls.items():
                    if not isinstance(entry, dict):
                        continue
                    total = self.carried.setdefault(group, {}).setdefault(key, {"calls": 0, "errors": {}})
                    total["calls"] += entry.get("calls") or 0
                    for status, count in (entry.get("errors") or {}).items():
                        total["errors"][status] = total["errors"].get(status, 0) + count
        self.started = service_start(snapshot)
        self.period_start = period_start(snapshot)

    def merged(self, period: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
        """The call groups of *period* with the carried counts added (latencies stay per period)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        groups = {g for g in period if g not in _PERIOD_KEYS and isinstance(period[g], dict)}
        for group in sorted(groups | set(self.carried)):
            current: dict[str, Any] = period[group] if group in groups else {}
            carried = self.carried.get(group, {})
            merged: dict[str, dict[str, Any]] = {}
            for key in sorted(set(current) | set(carried)):
                found = current.get(key)
                entry: dict[str, Any] = found if isinstance(found, dict) else {}
                extra = carried.get(key, {"calls": 0, "errors": {}})
                errors = dict(entry.get("errors") or {})
                for status, count in extra["errors"].items():
                    errors[status] = errors.get(status, 0) + count
                merged[key] = {"calls": (entry.get("calls") or 0) + extra["calls"], "errors": errors,
                               "latency_ms": entry.get("latency_ms") or {}}
            out[group] = merged
        return out


async def scrape(target: ScrapeTarget, timeout: float, last_period: float | None = None) -> Scrape:
    """Fetch the current statistics and the error states of one target.

    With *last_period* (the start of the period the caller saw last time), the
    periods closed since then are fetched too, for :class:`RunningTotals`.
    """
    result = Scrape(target)
    client = make_client(target.url, timeout)
    started = perf_counter()
    route = "eco.statistics.get"
    try:
        statistics = await client.request(route, {"type": "current"})
        if not isinstance(statistics, dict):
            raise EcosysError(f"{route} answered {type(statistics).__name__}, not an object")
        result.statistics, result.up = statistics, True
    except ResponseError as exc:
        result.error = f"{route} answered {describe_response_error(exc)}"
    except (EcosysError, OSError) as exc:
        result.error = describe_transport_error(target.url, route, timeout, exc).removeprefix("eco: ")
    try:
        if result.up and last_period is not None and period_start(result.statistics or {}) != last_period:
            route = "eco.statistics.get (full)"
            history = await client.request("eco.statistics.get", {"type": "full"})
            periods = history.get("history") if isinstance(history, dict) else None
            result.closed_periods = [
                p for p in periods or []
                if isinstance(p, dict) and isinstance(p.get("start"), (int, float))
                and p["start"] >= last_period - 1e-6
            ]
        if result.up:
            route = "eco.error_states.get"
            states = await client.request(route)
            result.error_states = states if isinstance(states, dict) else None
    except ResponseError as exc:
        result.notes.append(f"{route} answered {describe_response_error(exc)}")
    except (EcosysError, OSError) as exc:
        result.notes.append(describe_transport_error(target.url, route, timeout, exc).removeprefix("eco: "))
    finally:
        await client.close()
        result.duration = perf_counter() - started
    return result


async def scrape_all(targets: Iterable[ScrapeTarget], timeout: float,
                     last_periods: dict[ScrapeTarget, float | None] | None = None) -> list[Scrape]:
    """Scrape every target concurrently."""
    last = last_periods or {}
    return list(await asyncio.gather(*(scrape(t, timeout, last.get(t)) for t in targets)))


def run_fresh(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* to completion on a new event loop, in a helper thread if this one has a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# ----- metric families --------------------------------------------------------------


F = TypeVar("F", GaugeMetricFamily, CounterMetricFamily)


class _Families:
    """Metric families by name, created on first use, so only families with samples are exposed."""

    def __init__(self) -> None:
        self.items: dict[str, Metric] = {}

    def _family(self, kind: type[F], name: str, doc: str, labels: list[str]) -> F:
        family = self.items.get(name)
        if family is None:
            family = self.items[name] = kind(name, doc, labels=labels)
        assert isinstance(family, kind)
        return family

    def gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return self._family(GaugeMetricFamily, name, doc, labels)

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        return self._family(CounterMetricFamily, name, doc, labels)

    def absorb(self, other: _Families) -> None:
        """Add the samples of *other* (one target's families) to these."""
        for name, family in other.items.items():
            mine = self.items.setdefault(name, family)
            if mine is not family:
                mine.samples.extend(family.samples)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def flatten_custom(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric custom statistics as (dotted name, value); ``_`` holds a node's own value."""
    for key, value in values.items():
        name = prefix if key == "_" and prefix else f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from flatten_custom(value, name)
        else:
            number = _number(value)
            if number is not None:
                yield name, number


def _group_metrics(families: _Families, service: str, group: str, calls: dict[str, Any]) -> None:
    prefix, key_label = _GROUP_METRICS.get(group, (f"ecosys_{_metric_part(group)}", "key"))
    labels = [key_label, "route"] if group == "senders" else [key_label]
    what = {"endpoints": "endpoint", "queued_handlers": "queued handler", "senders": "sent request"}.get(
        group, group)
    counted = " (carried across statistics periods while the collector runs)"
    period = " over the current statistics period"
    for key, entry in calls.items():
        if not isinstance(entry, dict):
            continue
        if group == "senders":
            route, _, target = key.partition(" @ ")
            values = [target or key, route]
        else:
            values = [key]
        base = [service, *values]
        families.counter(f"{prefix}_calls_total", f"Calls per {what}{counted}",
                         ["service", *labels]).add_metric(base, float(entry.get("calls") or 0))
        for status, count in (entry.get("errors") or {}).items():
            families.counter(f"{prefix}_errors_total", f"Failed calls per {what} and status{counted}",
                             ["service", *labels, "status"]).add_metric([*base, str(status)], float(count))
        latency = entry.get("latency_ms") or {}
        for name, quantile in QUANTILES:
            value = _number(latency.get(name))
            if value is not None:
                families.gauge(
                    f"{prefix}_latency_seconds", f"Latency quantiles per {what}{period}",
                    ["service", *labels, "quantile"],
                ).add_metric([*base, quantile], round(value / 1000, 9))
        peak = _number(latency.get("max"))
        if peak is not None:
            families.gauge(f"{prefix}_latency_max_seconds", f"Slowest call per {what}{period}",
                           ["service", *labels]).add_metric(base, round(peak / 1000, 9))


def _metric_part(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "group"


def _queue_metrics(families: _Families, service: str, queues: dict[str, Any]) -> None:
    labels = ["service", "queue", "kind"]
    for label, data in queues.items():
        if not isinstance(data, dict) or "error" in data:
            continue
        kind, _, name = label.partition(".")
        base = [service, str(data.get("queue_route_key", name)), kind]
        families.gauge("ecosys_queue_pending", "Requests waiting in the durable pending queue",
                       labels).add_metric(base, float(data.get("pending") or 0))
        families.gauge("ecosys_queue_errors", "Requests parked in the error queue",
                       labels).add_metric(base, float(data.get("errors") or 0))
        active = families.gauge("ecosys_queue_active",
                                "1 while the queue's activity runs, 0 while it is paused",
                                [*labels, "activity"])
        for activity in ("receiving", "processing", "sending"):
            if activity in data:
                active.add_metric([*base, activity], 1.0 if data[activity] else 0.0)
        if "in_flight" in data:
            families.gauge("ecosys_queue_in_flight", "Messages of a queued sender being delivered now",
                           labels).add_metric(base, float(data.get("in_flight") or 0))
        if "delivered" in data:
            families.counter("ecosys_queue_delivered_total",
                             "Messages a queued sender delivered since the service started",
                             labels).add_metric(base, float(data.get("delivered") or 0))


def families_for(scrapes: Iterable[Scrape]) -> list[Metric]:
    """The metric families of a set of scrape results."""
    families = _Families()
    up = families.gauge("ecosys_up", "1 when the service answered eco.statistics.get, else 0", ["service"])
    for result in scrapes:
        own = _Families()
        if result.up and result.statistics is not None:
            try:
                _service_metrics(own, result)
            except Exception as exc:
                # Not ecosys, or another version: this target is down, the others are still exported.
                own = _Families()
                mark_unexpected(result, exc)
        service = result.target.service
        up.add_metric([service], 1.0 if result.up else 0.0)
        families.gauge("ecosys_scrape_duration_seconds", "Time taken to ask the service",
                       ["service"]).add_metric([service], result.duration)
        families.absorb(own)
    return list(families.items.values())


def _service_metrics(families: _Families, result: Scrape) -> None:
    """Add the samples of one target that answered; raises on an answer of an odd shape."""
    service = result.target.service
    snapshot = result.statistics or {}
    uptime = _number(snapshot.get("uptime"))
    if uptime is not None:
        families.gauge("ecosys_uptime_seconds", "Seconds since the service started",
                       ["service"]).add_metric([service], uptime)
    period = snapshot.get("current") or {}
    start = _number(period.get("start"))
    if start is not None:
        families.gauge("ecosys_statistics_period_start_timestamp_seconds",
                       "Start of the current statistics period of the service",
                       ["service"]).add_metric([service], start)
    groups = result.calls or {g: c for g, c in period.items() if g not in _PERIOD_KEYS}
    for group in [*_GROUP_METRICS, *sorted(set(groups) - set(_GROUP_METRICS))]:
        calls = groups.get(group)
        if isinstance(calls, dict):
            _group_metrics(families, service, group, calls)
    queues = period.get("queues")
    if isinstance(queues, dict):
        _queue_metrics(families, service, queues)
    custom = period.get("custom")
    if isinstance(custom, dict):
        for name, value in flatten_custom(custom):
            families.gauge("ecosys_custom", "Numeric custom statistics of the service",
                           ["service", "name"]).add_metric([service, name], value)
    if result.error_states is not None:
        states = result.error_states
        families.gauge("ecosys_error_states", "Error states raised now",
                       ["service"]).add_metric([service], float(len(states)))
        for name, state in states.items():
            count = _number(state.get("count")) if isinstance(state, dict) else None
            families.gauge("ecosys_error_state_count", "How often each raised error state was raised",
                           ["service", "state"]).add_metric([service, name], count or 1.0)


class EcosysCollector:
    """A prometheus_client collector that scrapes ecosys services at every ``collect()``.

    Call and error counters are carried over period roll-overs (see
    :class:`RunningTotals`), so they keep growing for as long as this
    collector lives and the service runs.
    """

    def __init__(self, targets: list[ScrapeTarget], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.targets = targets
        self.timeout = timeout
        self.last: list[Scrape] = []
        self.totals: dict[ScrapeTarget, RunningTotals] = {t: RunningTotals() for t in targets}
        self._lock = threading.Lock()  # concurrent scrapes (HTTP threads) take turns

    def describe(self) -> list[Metric]:
        """Nothing: the families depend on what the services answer (keeps registration cheap)."""
        return []

    def scrape(self) -> list[Scrape]:
        """Ask every target now and bring the running totals up to date."""
        return self._scrape()[0]

    def _scrape(self) -> tuple[list[Scrape], list[Metric]]:
        with self._lock:
            last_periods: dict[ScrapeTarget, float | None] = {
                t: totals.period_start for t, totals in self.totals.items()
            }
            results = run_fresh(scrape_all(self.targets, self.timeout, last_periods))
            for result in results:
                totals = self.totals[result.target]
                snapshot = result.statistics
                if not result.up or snapshot is None:
                    continue
                try:
                    closed = result.closed_periods if totals.rolled_over_since(snapshot) is not None else []
                    totals.update(snapshot, closed)
                    current = snapshot.get("current")
                    result.calls = totals.merged(current if isinstance(current, dict) else {})
                except Exception as exc:
                    # Not ecosys, or another version: this target is down, the others still count.
                    # Its totals may be half updated, so they start afresh (a counter reset).
                    self.totals[result.target] = RunningTotals()
                    mark_unexpected(result, exc)
            # Made here, so --json (which prints only the results) also shows a target whose
            # answer cannot become metrics as down.
            metrics = families_for(results)
            self.last = results
            return results, metrics

    def collect(self) -> Iterator[Metric]:
        """Fresh metric families for this scrape."""
        yield from self._scrape()[1]


def registry_for(collector: EcosysCollector) -> CollectorRegistry:
    """A registry holding only *collector*."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(collector: EcosysCollector) -> str:
    """One scrape in the Prometheus text exposition format."""
    return generate_latest(registry_for(collector)).decode()


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPv6]:PORT``; anything else is a usage error."""
    # The rules of the --tcp and --udp flags, plus ":PORT" for every interface.
    candidate = text.strip()
    if candidate.startswith(":"):
        candidate = "0.0.0.0" + candidate
    try:
        address = parse_host_port(candidate)
    except ValueError as exc:
        raise usage_error(
            f"bad --listen {text!r}: {exc} (e.g. 127.0.0.1:9464, :9464 or [::1]:9464)") from None
    return address.host, address.port


def serve(collector: EcosysCollector, host: str, port: int) -> None:
    """Serve ``/metrics`` on HTTP until SIGINT or SIGTERM."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry_for(collector))
    except OSError as exc:
        raise usage_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound_host = str(server.server_address[0])
    bound_port = int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"eco: serving metrics of {len(collector.targets)} target(s) on "
          f"http://{shown}:{bound_port}/metrics (Ctrl-C to stop)", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
        thread.join(5)
    print("eco: stopped serving metrics", file=sys.stderr, flush=True)
