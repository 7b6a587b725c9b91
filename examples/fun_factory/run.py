"""Run the whole Fun Factory: seven services, a client, a live view and a summary.

    python examples/fun_factory/run.py --duration 20 --rate 40

Starts every service as its own process (instance ``demo``) under one run directory,
sends messages to the router at the given rate while a table of every service's
statistics refreshes on the terminal, then drains the tracking queue, stops everything
with SIGTERM and prints a summary. ``--kill-tracker-at 8`` kills the tracker with
SIGKILL eight seconds in and restarts it a second later, to show that no tracking
record is lost. Ctrl-C stops everything (a second Ctrl-C kills at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fun_client import DriveResult, drive
from fun_system import SERVICES, FunFactory, ServiceFailed
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

MAIN_ROUTE = {
    "fortunes": "fortunes.tell", "joker": "joker.tell", "lottery": "lottery.draw",
    "magic_eight_ball": "magic_eight_ball.ask", "time_reporter": "time_reporter.now",
    "tracker": "tracker.track", "router": "router.ask",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds the client sends for")
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second")
    parser.add_argument("--seed", type=int, default=None, help="seed for the client's choices")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="where services keep logs, queues and sockets (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory afterwards")
    parser.add_argument("--kill-tracker-at", type=float, default=None, metavar="SECONDS",
                        help="SIGKILL the tracker this many seconds in, restart it a second later")
    return parser.parse_args(argv)


class ClientLog:
    """The client's log: one line per answer, tagged with the message uid, written off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def answer(self, uid: str, message: dict[str, Any], status: int, data: Any) -> None:
        """Note one answer."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        what = data.get("text") if status == 0 else f"status {status}: {data.get('message')}"
        self.lines.append(f"{stamp} client [{uid}] {message['topic']}: {what}\n")

    async def flush(self) -> None:
        """Append what was noted so far."""
        lines, self.lines = self.lines, []
        if lines:
            await asyncio.to_thread(self._append, "".join(lines))

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(text)


def _main_call(statistics: dict[str, Any] | None, service: str) -> dict[str, Any]:
    if not statistics:
        return {}
    found: dict[str, Any] = statistics["current"].get("endpoints", {}).get(MAIN_ROUTE[service], {})
    return found


def _queue_cell(statistics: dict[str, Any] | None) -> str:
    if not statistics:
        return ""
    queues = statistics["current"].get("queues", {})
    return ", ".join(f"{q.get('pending', '?')} / {q.get('errors', '?')}" for q in queues.values())


def service_table(factory: FunFactory, snapshot: dict[str, Any], width: int = 200) -> Table:
    """One row per service: process, calls, errors, latency, queues (the route too, if there is room)."""
    table = Table(title="Fun Factory services", title_justify="left", expand=False)
    show_route = width >= 110
    columns = ["service", "pid", "state", *(["route"] if show_route else []), "calls", "errors",
               "p50 ms", "p99 ms", "queue pending / errors"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("pid", "calls", "errors", "p50 ms", "p99 ms")
                         else "left")
    for name in SERVICES:
        service = factory.services[name]
        stats = snapshot.get(name)
        call = _main_call(stats, name)
        latency = call.get("latency_ms", {})
        errors = sum(call.get("errors", {}).values())
        state = Text("up", style="green") if service.running and stats else (
            Text("not answering", style="yellow") if service.running else Text("down", style="red"))
        table.add_row(
            name, str(service.process.pid if service.process else "-"), state,
            *([MAIN_ROUTE[name]] if show_route else []),
            str(call.get("calls", 0)), str(errors),
            f"{latency['p50']:.2f}" if latency.get("p50") is not None else "-",
            f"{latency['p99']:.2f}" if latency.get("p99") is not None else "-",
            _queue_cell(stats),
        )
    return table


def progress_line(elapsed: float, result: DriveResult, tracked: int | None) -> str:
    """The client's tally in one line."""
    shown = "?" if tracked is None else str(tracked)
    return (f"{elapsed:5.1f} s  sent {result.sent}  answered {len(result.answered)} "
            f"(ok {result.ok})  no answer {len(result.lost)}  tracked {shown}")


async def tracked_count(factory: FunFactory) -> int | None:
    """What the tracker says it has stored."""
    answer = await factory.call("tracker", "tracker.count")
    return None if answer is None else int(answer["tracked"])


async def chaos(factory: FunFactory, at: float, console: Console) -> None:
    """Kill the tracker with SIGKILL at *at* seconds, restart it one second later."""
    await asyncio.sleep(at)
    console.log(f"[red]kill -9 tracker (pid {factory.services['tracker'].process.pid})")  # type: ignore[union-attr]
    factory.kill("tracker")
    await asyncio.sleep(1.0)
    service = await factory.start_service("tracker")
    console.log(f"[green]tracker restarted (pid {service.process.pid})")  # type: ignore[union-attr]


async def watch(factory: FunFactory, args: argparse.Namespace, console: Console,
                log: ClientLog) -> DriveResult:
    """Drive the client while showing live statistics; returns the client's tally."""
    result = DriveResult()
    driving = asyncio.create_task(drive(factory.router_url, rate=args.rate, duration=args.duration,
                                        seed=args.seed, on_answer=log.answer, result=result))
    chaos_task = (asyncio.create_task(chaos(factory, args.kill_tracker_at, console))
                  if args.kill_tracker_at is not None else None)
    started = time.monotonic()
    last_line = 0.0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                done = driving.done()
                snapshot = await factory.statistics()
                tracked = await tracked_count(factory)
                elapsed = time.monotonic() - started
                line = progress_line(elapsed, result, tracked)
                view = Group(Text(line, style="bold"), service_table(factory, snapshot, console.width))
                live.update(view, refresh=True)
                if not console.is_terminal and elapsed - last_line >= 5.0:
                    console.print(line)  # a log a CI run can read; the table shows once, at the end
                    last_line = elapsed
                await log.flush()
                if done:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(driving), 1.0)
        if chaos_task is not None:
            await chaos_task
        return driving.result()
    finally:
        for task in (driving, chaos_task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await log.flush()


def uid_trail(factory: FunFactory, log: ClientLog, uid: str) -> list[str]:
    """Where one message's uid shows up: every log file under the run directory."""
    places = []
    for path in sorted([log.path, *(s.log for s in factory.services.values())]):
        if path.exists() and uid in path.read_text(errors="replace"):
            places.append(str(path.relative_to(factory.run_dir)))
    return places


async def summarize(factory: FunFactory, result: DriveResult, log: ClientLog, console: Console,
                    drained: bool) -> bool:
    """Print the summary; True when every answered message was tracked exactly once."""
    router = await factory.call("router", "eco.queued_sender.data", {"queue_route_key": "to_tracker"})
    tracker_queue = await factory.call("tracker", "eco.queued_handler.data",
                                       {"queue_route_key": "tracker.track"})
    count = await factory.call("tracker", "tracker.count")
    tracked = await factory.tracked_uids()
    answered = set(result.answered)
    missing = answered - set(tracked)
    table = Table(title="Summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    by_status = ", ".join(f"status {s}: {n}" for s, n in sorted(result.by_status().items()))
    p50, p99 = result.percentile_ms(0.5), result.percentile_ms(0.99)
    table.add_row("messages sent", str(result.sent))
    table.add_row("answered", f"{len(result.answered)} ({by_status})")
    skipped = f" (skipped {result.skipped})" if result.skipped else ""
    table.add_row("no answer", f"{len(result.lost)}{skipped}")
    table.add_row("tracked", f"{len(tracked)} in {factory.database.name}; "
                             f"{'all answered messages' if not missing else f'{len(missing)} MISSING'}")
    if count is not None:
        table.add_row("repeat deliveries ignored", str(count["duplicates"]))
    if router is not None:
        table.add_row("router queue to_tracker", f"{router['pending']} pending, {router['errors']} errors, "
                                                 f"{router['delivered']} delivered")
    if tracker_queue is not None:
        table.add_row("tracker queue tracker.track",
                      f"{tracker_queue['pending']} pending, {tracker_queue['errors']} errors")
    table.add_row("latency (client, round trip)",
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms" if p50 is not None and p99 is not None else "-")
    console.print()
    console.print(table)
    ok_uids = [uid for uid, status in result.answered.items() if status == 0]
    if ok_uids:
        uid = ok_uids[len(ok_uids) // 2]
        in_db = "and in the tracker's database" if uid in tracked else "but NOT in the tracker's database"
        # Whole log files are searched: off the event loop.
        places = await asyncio.to_thread(uid_trail, factory, log, uid)
        console.print(f"One message, one uid: {uid} is in {', '.join(places)} {in_db}.")
    if not drained:
        console.print("[yellow]the tracking queue did not drain in time")
    return bool(answered) and not missing and drained


async def run(args: argparse.Namespace, console: Console, factory: FunFactory) -> int:
    """The demo from start to summary; the exit code."""
    run_dir = factory.run_dir
    log = ClientLog(run_dir / "client" / "client.log")
    console.print(f"[bold]The Fun Factory[/bold]: {len(SERVICES)} services under {run_dir}")
    good = False
    try:
        try:
            with console.status("starting services..."):
                await factory.start()
        except ServiceFailed as exc:
            console.print(f"[red]{exc.service} failed to start[/red]: {exc.reason}")
            console.print("stopped the services that had started.")
            return 1
        for name, pid in factory.pids().items():
            console.print(f"  started {name:<17} pid {pid}  {factory.services[name].url}")
        console.print(f"sending {args.rate:g} messages/s for {args.duration:g} s to router.ask")
        result = await watch(factory, args, console, log)
        with console.status("waiting for the tracker to catch up..."):
            drained = await factory.wait_drained(30.0)
        good = await summarize(factory, result, log, console, drained)
    finally:
        codes = await factory.stop()
        bad = {name: code for name, code in codes.items() if code not in (0, None)}
        exits = f"; [red]non-zero exits: {bad}" if bad else ", all exited 0"
        console.print("stopped every service" + exits)
        good = good and not bad
        if good and not args.keep and args.run_dir is None:
            # A temp dir of our own, and nothing in it worth looking at: tidy up.
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            console.print(f"logs, queues and the tracker database are in {run_dir}")
    console.print("[green]demo OK" if good else "[red]demo FAILED")
    return 0 if good else 1


async def main_async(args: argparse.Namespace, console: Console) -> int:
    """Run the demo; the first SIGINT/SIGTERM stops it in order, a second kills the services."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    factory = FunFactory(args.run_dir or Path(tempfile.mkdtemp(prefix="fun-factory-")))
    signals = {"count": 0}

    def interrupted() -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            console.print("[yellow]interrupted: stopping every service...")
            task.cancel()
        else:
            for name in SERVICES:
                factory.kill(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    try:
        return await run(args, console, factory)
    except asyncio.CancelledError:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)  # a log, not a screen: room for the whole table
    return asyncio.run(main_async(args, console))


if __name__ == "__main__":
    sys.exit(main())
