"""Keep the statistics of running ecosys services in RRD files and draw them as PNG graphs.

Every ``--interval`` seconds the collector asks each service for ``eco.statistics.get``
``{"type": "current"}`` and stores, per service, in ``OUT/<service>/``:

- ``calls.<group>.<key>.rrd``: calls and errors of every endpoint, queued handler and send
  target, as DERIVE data sources, so that RRDtool turns them into calls per second;
- ``latency.<group>.<key>.rrd``: p50 and p99 latency in milliseconds (GAUGE);
- ``queue.queues.<name>.rrd``: pending and error entries of every durable queue (GAUGE);
- ``up.rrd``: 1 while the service answers, 0 while it does not.

A service that does not answer is logged (once when it goes down, once when it comes back)
and gets UNKNOWN for that poll in every file; the collector carries on. After the run (and
every ``--graph-every`` polls, if given) it draws ``calls.png``, ``errors.png``,
``latency.png``, ``queues.png`` and ``up.png`` per service and an ``index.html`` showing them
all. Everything RRDtool does runs in ``rrdtool`` subprocesses started with asyncio, so the
event loop never waits on it.

The counts in a "current" statistics period start again from zero when the service rolls
its period over (every ``ECOENV_STAT_GP`` seconds) and when it restarts. The collector keeps
running totals: on a roll-over it reads the closed periods (``{"type": "full"}``) and adds
their final counts, so the rate stays right across the boundary; after a restart the rate of
that one interval is UNKNOWN (DERIVE with a minimum of 0 refuses the drop).

Usage::

    python examples/telemetry/collector.py --interval 5 --out /tmp/telemetry \\
        dice=tcp://127.0.0.1:8800 tcp://127.0.0.1:8801
    python examples/telemetry/collector.py --config services.json --duration 600

A service is ``URL`` (tcp://host:port, udp://host:port, uds:///path) or ``NAME=URL``. The
JSON config may hold ``services`` (a list of those, or an object NAME -> URL) and any
option with ``_`` for ``-``; the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecosys import Client, EcosysError, client_from_url

log = logging.getLogger("telemetry.collector")

#: Call groups of a statistics period, with how their keys are labelled in the graphs.
CALL_GROUPS = {"endpoints": "{}", "queued_handlers": "{} (queued handler)", "senders": "sent {}"}

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

INSTALL_HINT = "install it with: apt-get install -y --no-install-recommends rrdtool fonts-dejavu-core"


class RrdError(Exception):
    """An rrdtool command failed."""


@dataclass(frozen=True)
class Kind:
    """One kind of RRD file: its name and its data sources (name, type, min, max)."""

    name: str
    sources: tuple[tuple[str, str, str, str], ...]


CALLS = Kind("calls", (("calls", "DERIVE", "0", "U"), ("errors", "DERIVE", "0", "U")))
LATENCY = Kind("latency", (("p50", "GAUGE", "0", "U"), ("p99", "GAUGE", "0", "U")))
QUEUE = Kind("queue", (("pending", "GAUGE", "0", "U"), ("errors", "GAUGE", "0", "U")))
UP = Kind("up", (("up", "GAUGE", "0", "1"),))

Values = tuple[float | int | None, ...]


def slug(text: str) -> str:
    """A file-name-safe form of *text*; a short hash keeps lossy slugs apart."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "_"
    if safe != text:
        safe = f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return safe


def escape(text: str) -> str:
    """Escape colons for rrdtool graph arguments (paths in DEF, legends)."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


def archives(step: int) -> list[str]:
    """RRAs for a poll every *step* seconds: every poll for 2 hours, per minute for
    2 days, per hour for about 2 months; each as AVERAGE and MAX."""
    plans: list[tuple[int, int]] = []
    for resolution, keep in ((step, 2 * 3600), (60, 2 * 86400), (3600, 62 * 86400)):
        steps = max(1, round(resolution / step))
        if plans and plans[-1][0] == steps:
            continue
        plans.append((steps, math.ceil(keep / (steps * step))))
    return [f"RRA:{cf}:0.5:{steps}:{rows}" for cf in ("AVERAGE", "MAX") for steps, rows in plans]


class RrdTool:
    """Runs ``rrdtool`` commands as asyncio subprocesses (a few at a time)."""

    def __init__(self, binary: str = "rrdtool", concurrency: int = 8) -> None:
        self.binary = binary
        self._limit = asyncio.Semaphore(concurrency)

    async def __call__(self, *args: str) -> str:
        async with self._limit:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await proc.communicate()
            except BaseException:  # cancelled: do not leave the child behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        if proc.returncode != 0:
            message = (err or out).decode(errors="replace").strip()
            raise RrdError(f"rrdtool {args[0]} failed ({proc.returncode}): {message}")
        return out.decode(errors="replace")


class CallTotals:
    """Running call and error totals per (group, key) of one service.

    The "current" period restarts from zero at every roll-over; these totals do not: the
    final counts of the periods that closed since the last poll are added to them.
    """

    def __init__(self) -> None:
        self.started: float | None = None        # when the service's statistics began
        self.period_start: float | None = None   # start of the period seen at the last poll
        self.closed: dict[tuple[str, str], tuple[int, int]] = {}
        self.restarted = False

    @staticmethod
    def _started(snapshot: dict[str, Any]) -> float:
        return float(snapshot["timestamp"]) - float(snapshot["uptime"])

    def needs_history(self, snapshot: dict[str, Any]) -> bool:
        """True when the period rolled over since the last poll (same service run)."""
        if self.started is None or abs(self._started(snapshot) - self.started) > 0.5:
            return False
        return bool(snapshot["current"]["start"] != self.period_start)

    def update(self, snapshot: dict[str, Any], history: list[dict[str, Any]] | None = None
               ) -> dict[tuple[str, str], tuple[int, int]]:
        """Fold in a "current" snapshot (and the closed periods, after a roll-over)."""
        started = self._started(snapshot)
        current = snapshot["current"]
        self.restarted = self.started is not None and abs(started - self.started) > 0.5
        if self.started is None or self.restarted:
            self.closed = {}
        elif current["start"] != self.period_start and self.period_start is not None:
            for period in history or []:
                end = period.get("end")
                if (end is not None and period["start"] >= self.period_start - 1e-6
                        and end <= current["start"] + 1e-6):
                    for (group, key), (calls, errors) in _counts(period).items():
                        old_calls, old_errors = self.closed.get((group, key), (0, 0))
                        self.closed[(group, key)] = (old_calls + calls, old_errors + errors)
        self.started = started
        self.period_start = current["start"]
        totals = dict(self.closed)
        for (group, key), (calls, errors) in _counts(current).items():
            old_calls, old_errors = totals.get((group, key), (0, 0))
            totals[(group, key)] = (old_calls + calls, old_errors + errors)
        return totals


def _counts(period: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for group in CALL_GROUPS:
        for key, described in (period.get(group) or {}).items():
            out[(group, key)] = (int(described["calls"]), sum(described["errors"].values()))
    return out


def measurements(snapshot: dict[str, Any], totals: dict[tuple[str, str], tuple[int, int]],
                 include_eco: bool = False) -> list[tuple[Kind, str, str, Values]]:
    """What to store for one poll: (kind, group, key, values) per RRD file."""
    current = snapshot["current"]
    out: list[tuple[Kind, str, str, Values]] = []
    for (group, key), (calls, errors) in sorted(totals.items()):
        if not include_eco and group == "endpoints" and key.startswith("eco."):
            continue
        out.append((CALLS, group, key, (calls, errors)))
        latency = ((current.get(group) or {}).get(key) or {}).get("latency_ms") or {}
        if latency.get("p50") is not None:
            out.append((LATENCY, group, key, (latency["p50"], latency.get("p99"))))
    for name, data in sorted((current.get("queues") or {}).items()):
        if isinstance(data, dict) and "pending" in data:
            out.append((QUEUE, "queues", name, (data["pending"], data.get("errors"))))
        else:  # the queue's size source failed: its numbers are unknown for now
            out.append((QUEUE, "queues", name, (None, None)))
    return out


@dataclass
class Series:
    """One RRD file of one service."""

    kind: Kind
    group: str
    key: str
    path: Path
    had_errors: bool = False

    @property
    def label(self) -> str:
        """How the series is named in graph legends."""
        return CALL_GROUPS.get(self.group, "{}").format(self.key)


@dataclass
class Service:
    """A polled service, its RRD files and what the collector knows about its state."""

    name: str
    url: str
    client: Client
    directory: Path
    series: dict[tuple[str, str, str], Series] = field(default_factory=dict)
    totals: CallTotals = field(default_factory=CallTotals)
    up: bool | None = None
    failures: int = 0


class Collector:
    """Polls ``eco.statistics.get`` of some services into RRD files and graphs them."""

    def __init__(
        self,
        services: Sequence[tuple[str, str]],
        out: Path | str,
        interval: int = 5,
        *,
        graph_every: int = 0,
        span: float = 3600.0,
        timeout: float | None = None,
        include_eco: bool = False,
        rrdtool: str = "rrdtool",
    ) -> None:
        if interval < 1:
            raise ValueError("interval must be at least 1 second (the RRD step)")
        names = [name for name, _ in services]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"service names must be unique: {', '.join(duplicated)}")
        self.out = Path(out)
        self.interval = interval
        self.heartbeat = 3 * interval
        self.graph_every = graph_every
        self.span = span
        self.include_eco = include_eco
        self.timeout = timeout if timeout is not None else max(0.5, min(5.0, 0.8 * interval))
        self.rrd = RrdTool(rrdtool)
        self.services = [
            Service(name, url, client_from_url(url, timeout=self.timeout,
                                               connect_timeout=self.timeout, retries=0),
                    self.out / name)
            for name, url in services
        ]
        self.polls = 0
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._render_task: asyncio.Task[list[Path]] | None = None

    # ----- running ---------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`run` to finish (it still draws the graphs)."""
        self._stop.set()

    async def run(self, duration: float | None = None) -> list[Path]:
        """Poll every interval until *duration* seconds passed or :meth:`stop`; then graph.

        Returns the PNG files drawn at the end.
        """
        if shutil.which(self.rrd.binary) is None:
            raise RrdError(f"{self.rrd.binary!r} not found; {INSTALL_HINT}")
        self.started_at = time.time()
        await asyncio.to_thread(self._make_directories)
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        try:
            while not self._stop.is_set():
                await self.poll_once()
                if self.graph_every and self.polls % self.graph_every == 0:
                    self._render_in_background()
                # Poll on the RRD step boundaries (multiples of the interval since the epoch):
                # each poll then lands in a step of its own and nothing is smeared over two.
                # A poll that overran a boundary just waits for the next one.
                delay = self.interval - time.time() % self.interval
                if deadline is not None and loop.time() + delay > deadline + 1e-3:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancellation on 3.11
                        await self._stop.wait()
        finally:
            if self._render_task is not None:
                await asyncio.gather(self._render_task, return_exceptions=True)
            for service in self.services:
                await service.client.close()
        return await self.render()

    def _make_directories(self) -> None:
        for service in self.services:
            service.directory.mkdir(parents=True, exist_ok=True)

    async def poll_once(self) -> None:
        """Poll every service once and store what each said (or UNKNOWN)."""
        await asyncio.gather(*(self._poll(service) for service in self.services))
        self.polls += 1

    async def _poll(self, service: Service) -> None:
        try:
            values = await self._read(service)
        except (EcosysError, OSError) as exc:
            self._went_down(service, f"{type(exc).__name__}: {exc}")
            values = None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._went_down(service, f"unexpected statistics shape ({type(exc).__name__}: {exc})")
            values = None
        stamp = time.time()
        if values is None:
            values = [(s.kind, s.group, s.key, (None,) * len(s.kind.sources))
                      for s in service.series.values() if s.kind is not UP]
            values.append((UP, "service", "up", (0,)))
        else:
            if service.up is False:
                log.info("service %s (%s) answers again after %d failed poll(s)",
                            service.name, service.url, service.failures)
            service.up, service.failures = True, 0
            values.append((UP, "service", "up", (1,)))
        await asyncio.gather(*(self._store(service, kind, group, key, vals, stamp)
                               for kind, group, key, vals in values))

    async def _read(self, service: Service) -> list[tuple[Kind, str, str, Values]]:
        snapshot = await service.client.request("eco.statistics.get", {"type": "current"})
        history = None
        if service.totals.needs_history(snapshot):
            try:
                full = await service.client.request("eco.statistics.get", {"type": "full"})
                history = full["history"]
            except (EcosysError, KeyError, TypeError) as exc:
                log.warning("service %s: could not read the closed periods (%s); "
                            "its rates are unknown around this roll-over", service.name, exc)
        totals = service.totals.update(snapshot, history)
        if service.totals.restarted:
            log.warning("service %s (%s) restarted: its counts start again", service.name, service.url)
        return measurements(snapshot, totals, self.include_eco)

    def _went_down(self, service: Service, reason: str) -> None:
        service.failures += 1
        if service.up is not False:
            log.warning("service %s (%s) does not answer: %s; storing UNKNOWN until it does",
                        service.name, service.url, reason)
        elif service.failures % 60 == 0:
            log.warning("service %s (%s) still does not answer after %d polls: %s",
                        service.name, service.url, service.failures, reason)
        else:
            log.debug("service %s still down: %s", service.name, reason)
        service.up = False

    async def _store(self, service: Service, kind: Kind, group: str, key: str,
                     values: Values, stamp: float) -> None:
        try:
            series = await self._series(service, kind, group, key, stamp)
            if kind is CALLS and values[1]:
                series.had_errors = True
            text = ":".join("U" if v is None else repr(v) for v in values)
            await self.rrd("update", str(series.path), f"{stamp:.3f}:{text}")
        except RrdError as exc:
            log.error("service %s: storing %s %s failed: %s", service.name, kind.name, key, exc)

    async def _series(self, service: Service, kind: Kind, group: str, key: str,
                      stamp: float) -> Series:
        """The series (and RRD file) for *key*, created the first time it is seen."""
        found = service.series.get((kind.name, group, key))
        if found is not None:
            return found
        filename = "up.rrd" if kind is UP else f"{kind.name}.{group}.{slug(key)}.rrd"
        series = Series(kind, group, key, service.directory / filename)
        await self._create(series, stamp)
        # Known (and graphed) only once its file exists; a failed create is tried again next poll.
        service.series[(kind.name, group, key)] = series
        return series

    async def _create(self, series: Series, stamp: float) -> None:
        path = series.path
        if await asyncio.to_thread(path.exists):
            info = await self.rrd("info", str(path))
            step = re.search(r"^step = (\d+)$", info, re.MULTILINE)
            last = re.search(r"^last_update = (\d+)", info, re.MULTILINE)
            if step and int(step.group(1)) == self.interval and last and int(last.group(1)) < stamp:
                return  # an earlier run's file that fits: carry on writing to it
            backup = path.with_name(path.name + ".old")
            log.warning("%s was made for another interval (or the clock went back); "
                        "moving it to %s", path, backup.name)
            await asyncio.to_thread(os.replace, path, backup)
        sources = [f"DS:{name}:{dst}:{self.heartbeat}:{low}:{high}"
                   for name, dst, low, high in series.kind.sources]
        await self.rrd("create", str(path), "--start", str(int(stamp) - 1),
                       "--step", str(self.interval), *sources, *archives(self.interval))

    # ----- graphs ----------------------------------------------------------

    def _render_in_background(self) -> None:
        if self._render_task is None or self._render_task.done():
            self._render_task = asyncio.get_running_loop().create_task(self.render(), name="render")

    async def render(self) -> list[Path]:
        """Draw every graph of every service (and index.html); returns the PNG files."""
        end = time.time()
        start = max(self.started_at - self.interval, end - self.span)
        drawn: list[Path] = []
        for service in self.services:
            for name, args in self._graphs(service):
                png = service.directory / f"{name}.png"
                partial = png.with_name(f".{png.name}.tmp")
                try:
                    await self.rrd("graph", str(partial), "--imgformat", "PNG",
                                   "--start", str(int(start)), "--end", str(math.ceil(end)),
                                   "--width", "800", "--height", "240", "--slope-mode",
                                   *args)
                    await asyncio.to_thread(os.replace, partial, png)
                    drawn.append(png)
                except RrdError as exc:
                    log.error("service %s: drawing %s failed: %s", service.name, png.name, exc)
        await asyncio.to_thread(self._write_index, drawn)
        return drawn

    def _graphs(self, service: Service) -> Iterable[tuple[str, list[str]]]:
        """(name, rrdtool graph arguments) of every graph the service has data for."""
        by_kind: dict[str, list[Series]] = {}
        for series in service.series.values():
            by_kind.setdefault(series.kind.name, []).append(series)
        order = list(CALL_GROUPS) + ["queues", "service"]
        for group in by_kind.values():
            group.sort(key=lambda s: (order.index(s.group) if s.group in order else 99, s.key))
        title = f"{service.name} ({service.url})"
        calls = by_kind.get("calls", [])
        if calls:
            yield "calls", self._lines(f"{title}: calls per second", "calls/s",
                                       [(s, "calls", s.label, "") for s in calls], "%8.2lf")
        failing = [s for s in calls if s.had_errors]
        if failing:
            yield "errors", self._lines(f"{title}: errors per second", "errors/s",
                                        [(s, "errors", s.label, "") for s in failing], "%8.2lf")
        latency = by_kind.get("latency", [])
        if latency:
            lines = [line for s in latency
                     for line in ((s, "p99", f"{s.label} p99", ""), (s, "p50", f"{s.label} p50", ":dashes"))]
            yield "latency", self._lines(f"{title}: latency (p50 dashed, p99 solid)", "ms",
                                         lines, "%8.3lf", paired=True)
        queues = by_kind.get("queue", [])
        if queues:
            lines = [line for s in queues
                     for line in ((s, "pending", f"{s.key} pending", ""),
                                  (s, "errors", f"{s.key} errors", ":dashes"))]
            yield "queues", self._lines(f"{title}: queue sizes (errors dashed)", "entries",
                                        lines, "%8.0lf", paired=True)
        for s in by_kind.get("up", []):
            path = escape(str(s.path))
            yield "up", [
                "--title", f"{title}: answering", "--vertical-label", "up",
                "--lower-limit", "0", "--upper-limit", "1", "--rigid", "--height", "80",
                f"DEF:up={path}:up:AVERAGE", "CDEF:down=up,UN,1,1,up,-,IF",
                "AREA:up#2ca02c:answers", "AREA:down#d6272866:no answer (UNKNOWN)",
            ]

    @staticmethod
    def _lines(title: str, unit: str, lines: list[tuple[Series, str, str, str]], number: str,
               paired: bool = False) -> list[str]:
        width = max(len(label) for _, _, label, _ in lines)
        args = ["--title", title, "--vertical-label", unit, "--lower-limit", "0"]
        for index, (series, source, label, style) in enumerate(lines):
            colour = PALETTE[(index // 2 if paired else index) % len(PALETTE)]
            name = f"v{index}"
            args += [
                f"DEF:{name}={escape(str(series.path))}:{source}:AVERAGE",
                f"VDEF:{name}avg={name},AVERAGE",
                f"VDEF:{name}max={name},MAXIMUM",
                f"LINE{1 if style else 2}:{name}{colour}:{escape(label.ljust(width))}{style}",
                f"GPRINT:{name}avg:avg {number}",
                f"GPRINT:{name}max:max {number}\\l",
            ]
        return args

    def _write_index(self, drawn: list[Path]) -> None:
        refresh = self.interval * self.graph_every if self.graph_every else 0
        parts = ["<!doctype html><meta charset='utf-8'><title>ecosys telemetry</title>"]
        if refresh:
            parts.append(f"<meta http-equiv='refresh' content='{refresh}'>")
        parts.append("<h1>ecosys telemetry</h1>")
        for service in self.services:
            state = {True: "answering", False: "NOT answering", None: "never polled"}[service.up]
            parts.append(f"<h2>{html.escape(service.name)} "
                         f"<small>{html.escape(service.url)}: {state}</small></h2>")
            for png in drawn:
                if png.parent == service.directory:
                    src = html.escape(png.relative_to(self.out).as_posix())
                    parts.append(f"<p><img src='{src}' alt='{html.escape(png.stem)}'></p>")
        (self.out / "index.html").write_text("\n".join(parts) + "\n", encoding="utf-8")


# ----- command line ---------------------------------------------------------


def parse_service(text: str) -> tuple[str, str]:
    """``NAME=URL`` or ``URL`` (the name is then made from the address)."""
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        url = text
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://", 1)[-1]).strip("_.") or "service"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"service name {name!r}: use letters, digits, '_', '-' and '.'")
    client_from_url(url)  # fail now on a bad URL, not at the first poll
    return name, url


def load_config(path: str) -> dict[str, Any]:
    """Read the JSON config: {"services": [...] or {...}, "interval": 5, ...}."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    services = config.get("services", [])
    if isinstance(services, dict):
        services = [f"{name}={url}" for name, url in services.items()]
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise ValueError(f"{path}: 'services' must be a list of URLs / NAME=URL, or NAME -> URL")
    config["services"] = services
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector.py",
        description="Poll eco.statistics.get of ecosys services into RRD files and draw PNG graphs.",
    )
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help="URL or NAME=URL (tcp://host:port, udp://host:port, uds:///path)")
    parser.add_argument("-c", "--config", help="JSON file with services and options")
    parser.add_argument("--interval", type=int, help="seconds between polls; also the RRD step (default 5)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--out", help="directory for RRD files and graphs (default ./telemetry)")
    parser.add_argument("--graph-every", type=int,
                        help="also draw the graphs every N polls (default: only at the end)")
    parser.add_argument("--span", type=float, help="seconds of history in the graphs (default 3600)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for a service's answer")
    parser.add_argument("--include-eco", action="store_true", default=None,
                        help="also graph the eco.* standard endpoints (the collector's own polls among them)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


async def _main(collector: Collector, duration: float | None) -> list[Path]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, collector.stop)
    return await collector.run(duration)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(message)s")
    try:
        config = load_config(args.config) if args.config else {}
        options = {key: value for key, value in vars(args).items() if value is not None}
        merged = {**config, **options}
        services = [parse_service(s) for s in [*config.get("services", []), *args.services]]
        if not services:
            parser.error("no services: give URLs (or NAME=URL) or a --config with 'services'")
        if shutil.which("rrdtool") is None:
            print(f"collector: rrdtool not found; {INSTALL_HINT}", file=sys.stderr)
            return 2
        collector = Collector(
            services, merged.get("out", "telemetry"), int(merged.get("interval", 5)),
            graph_every=int(merged.get("graph_every", 0)), span=float(merged.get("span", 3600)),
            timeout=merged.get("timeout"), include_eco=bool(merged.get("include_eco", False)),
        )
    except (OSError, ValueError) as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    duration = merged.get("duration")
    log.info("polling %s every %ds into %s", ", ".join(f"{n}={u}" for n, u in services),
             collector.interval, collector.out)
    drawn = asyncio.run(_main(collector, None if duration is None else float(duration)))
    for png in drawn:
        print(png)
    print(collector.out / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
