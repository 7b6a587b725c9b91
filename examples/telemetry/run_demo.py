"""One command: the dice roller under load, watched by the RRD collector, graphs at the end.

    python examples/telemetry/run_demo.py [--seconds 20] [--interval 1] [--out DIR]

What it does:

1. starts examples/dice_roller/dice_server.py as a subprocess on a free port, with its
   queue and default directories in a temporary directory and a 10-second statistics
   period (ECOENV_STAT_GP=10), so the latency percentiles follow the load closely;
2. drives a steady load at it from a small client loop: ``roll`` and ``guess`` all the time
   (twice as fast in the middle third of the run), ``roll_times`` batches for the queued
   endpoint, a few invalid rolls (status 300) and unknown route keys (status 400); for a
   while in the middle it pauses the processing of ``roll_times``
   (``eco.queued_handler.processing.pause``), so its pending queue grows and then drains;
3. runs the collector (collector.py) against it with a 1-second interval, drawing the
   graphs every 5 polls and once more at the end;
4. stops the load and the server (SIGTERM, a clean exit) and prints where the PNGs are.

Needs the ``rrdtool`` program (apt-get install -y --no-install-recommends rrdtool
fonts-dejavu-core). Nothing is written into the repository: graphs go to --out (by default a
new directory under the system temp directory, kept), everything else is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ecosys import Client, TcpClient, TransportError

HERE = Path(__file__).resolve().parent
DICE_SERVER = HERE.parent / "dice_roller" / "dice_server.py"
QUEUE = {"queue_route_key": "roll_times"}


async def start_dice_server(workdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start the dice server on a free port; return the process and its tcp:// URL."""
    env = dict(os.environ, ECOENV_QUEUE_DIR=str(workdir / "queues"),
               ECOENV_DEFAULT_DIR=str(workdir), ECOENV_STAT_GP="10", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DICE_SERVER), "-i", "telemetry", "--tcp", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        # The start-up banner names the address: "... listening on tcp://127.0.0.1:PORT; log ..."
        banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("the dice server did not start within 20 s") from None
    found = re.search(r"tcp://[0-9.]+:\d+", banner)
    if found is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        errors = (await proc.stderr.read()).decode(errors="replace").strip()
        await proc.wait()
        raise RuntimeError(f"the dice server did not start: {banner.strip()!r} {errors}")
    print(f"dice server: {banner.strip()}")
    return proc, found.group(0)


async def stop_dice_server(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, then wait for the clean exit (kill after 15 s)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1


async def drive_load(client: Client, seconds: float, stop: asyncio.Event, rate: float) -> Counter[str]:
    """Call the dice server at a steady pace until *stop* is set; count the answers."""
    outcomes: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    next_tick = begin
    tick = 0
    paused = False

    async def call(route_key: str, data: Any) -> None:
        try:
            response = await client.send(route_key, data)
            outcomes[f"{route_key} status {response.status}"] += 1
        except TransportError as exc:
            outcomes[f"{route_key} {type(exc).__name__}"] += 1

    while not stop.is_set():
        elapsed = (loop.time() - begin) / seconds
        # roll_times processing is paused between 40% and 60% of the run: the queue fills up.
        want_paused = 0.4 <= elapsed < 0.6
        if want_paused != paused:
            action = "pause" if want_paused else "unpause"
            await call(f"eco.queued_handler.processing.{action}", QUEUE)
            print(f"load: roll_times processing {action}d at {loop.time() - begin:.1f} s")
            paused = want_paused
        calls = [call("roll", {"sides": 6})]
        if tick % 2 == 0:
            calls.append(call("guess", {"sides": 6, "guess": random.randint(1, 6)}))
        if tick % 8 == 0:
            calls.append(call("roll_times", {"times": random.randint(1, 300), "sides": 6}))
        if tick % 40 == 0:
            calls.append(call("roll", {"sides": 1}))  # refused: status 300
        if tick % 100 == 50:
            calls.append(call("roll_dice", {}))  # no such route: status 400
        await asyncio.gather(*calls)
        tick += 1
        # Twice the pace in the middle third of the run.
        pace = rate * (2 if 1 / 3 <= elapsed < 2 / 3 else 1)
        next_tick += 1 / pace
        delay = next_tick - loop.time()
        if delay < 0:
            next_tick = loop.time()  # fell behind: do not try to catch up in a burst
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, delay))
    if paused:
        await call("eco.queued_handler.processing.unpause", QUEUE)
    return outcomes


async def demo(args: argparse.Namespace, out: Path) -> int:
    sys.path.insert(0, str(HERE))  # collector.py sits next to this file
    from collector import Collector

    workdir = Path(tempfile.mkdtemp(prefix="ecosys-telemetry-demo-"))
    proc: asyncio.subprocess.Process | None = None
    client: TcpClient | None = None
    drawn: list[Path] = []
    code = -1
    try:
        proc, url = await start_dice_server(workdir)
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        client = TcpClient(host, int(port), timeout=5)
        collector = Collector([("dice", url)], out, args.interval, graph_every=5)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, collector.stop)
        stop = asyncio.Event()
        load = loop.create_task(drive_load(client, args.seconds, stop, args.rate))
        print(f"collecting every {args.interval} s for {args.seconds:g} s into {out} (Ctrl-C ends early) ...")
        started = time.monotonic()
        try:
            drawn = await collector.run(args.seconds)
        finally:
            stop.set()
            outcomes = await load
        print(f"load: {sum(outcomes.values())} calls in {time.monotonic() - started:.1f} s")
        for what, count in sorted(outcomes.items()):
            print(f"    {what:<52} {count:>6}")
        data = await client.request("eco.queued_handler.data", QUEUE)
        print(f"roll_times queue now: pending={data['pending']} errors={data['errors']}")
    finally:
        if client is not None:
            await client.close()
        if proc is not None:
            code = await stop_dice_server(proc)
            print(f"dice server stopped (exit code {code})")
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("graphs:")
    for png in drawn:
        print(f"    {png}")
    print(f"all of them on one page: {out / 'index.html'}")
    print(f"    (open it in a browser, or: python -m http.server -d {out} 8000  then  http://localhost:8000/)")
    return 0 if drawn and code == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to collect (default 20)")
    parser.add_argument("--interval", type=int, default=1, help="seconds between polls (default 1)")
    parser.add_argument("--rate", type=float, default=20.0, help="roll calls per second (default 20)")
    parser.add_argument("--out", help="where the RRD files and graphs go (default: a new temp directory)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
    if shutil.which("rrdtool") is None:
        print("run_demo: the rrdtool program is needed: "
              "apt-get install -y --no-install-recommends rrdtool fonts-dejavu-core", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ecosys-telemetry-"))
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(demo(args, out.resolve()))


if __name__ == "__main__":
    sys.exit(main())
