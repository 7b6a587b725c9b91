"""What every benchmark's measurements share: errors, progress counters, run options, event loops."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path


class BenchError(Exception):
    """A wrong answer, a failed delivery, or a stall."""


class Progress:
    """Requests answered so far by the workers of one measurement."""

    __slots__ = ("count", "running")

    def __init__(self) -> None:
        self.count = 0
        self.running = True


async def run_for(tasks: Sequence[asyncio.Future[None]], seconds: float) -> None:
    """Let the workers run for *seconds*; a worker that fails or returns early is an error."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()
        raise BenchError("a worker returned before it was asked to stop")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for *kind*; None is asyncio's default loop."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def uvloop_version() -> str | None:
    """The installed uvloop's version, or None."""
    try:
        import uvloop
    except ImportError:
        return None
    return str(uvloop.__version__)


def add_run_options(parser: argparse.ArgumentParser, *, seconds: float, warmup: float,
                    quick: tuple[float, float], json_path: Path, repeats: int = 3) -> None:
    """The options every benchmark takes: timing, repetitions, loops, output."""
    parser.add_argument("--seconds", type=float, default=seconds,
                        help=f"measured seconds per repetition of each case (default {seconds:g})")
    parser.add_argument("--warmup", type=float, default=warmup,
                        help=f"seconds run before each measurement starts (default {warmup:g})")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"repetitions per case; the median is reported (default {repeats})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1 repetition of {quick[0]:g} s per case, {quick[1]:g} s warm-up")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both",
                        help="event loop kind(s) to run (default both)")
    parser.add_argument("--json", type=Path, default=json_path,
                        help=f"where to write the results (default {json_path.name} here)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 if a target is missed or a case failed")
    parser.set_defaults(quick_timing=quick)


def parse_run_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; --quick overrides the timing; bad timing is a usage error."""
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = args.quick_timing
        args.repeats = 1
    if args.seconds <= 0 or args.warmup < 0 or args.repeats < 1:
        parser.error("--seconds must be > 0, --warmup >= 0 and --repeats >= 1")
    return args


def paired_ratios(values: Sequence[float | None], references: Sequence[float | None]) -> list[float]:
    """value / reference for each repetition in which both were measured (None: that one failed).

    Both sides of a repetition run seconds apart, so each ratio compares them on
    the machine as it was then; on a machine whose speed drifts (a shared VM),
    medians taken over the whole run would compare one side's fast moments with
    the other's slow ones.
    """
    return [
        value / reference
        for value, reference in zip(values, references, strict=True)
        if value is not None and reference
    ]
