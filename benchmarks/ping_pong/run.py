"""Ping-pong benchmark: ecosys round trips per second against a minimal asyncio baseline.

Run it:  .venv/bin/python benchmarks/ping_pong/run.py [--seconds S] [--quick] [--loop KIND]
(`make bench`). See README.md in this directory for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import Addresses, ServerProcess
from workloads import (
    WINDOW,
    Workload,
    baseline_pipelined,
    baseline_sequential,
    baseline_transient,
    baseline_udp_sequential,
    baseline_udp_window,
    ecosys_client,
    ecosys_workload,
    measure,
    tcp_opener,
    uds_opener,
    workers_of,
)

import ecosys
from ecosys.build import build_kind

# Helpers shared by every benchmark (this one runs as a script from its own folder).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from measuring import (  # noqa: E402
    add_run_options,
    loop_factory,
    paired_ratios,
    parse_run_options,
    uvloop_version,
)

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "last_run.json"
SEQUENTIAL_TARGET = 0.75
IN_FLIGHT_TARGET = 0.40
TARGETS_TEXT = (
    f"persistent TCP and UDS, 1 at a time: ecosys >= {SEQUENTIAL_TARGET:.0%} of the baseline "
    "1 at a time on the same socket type",
    f"{WINDOW} in flight on one persistent TCP or UDS connection: ecosys >= "
    f"{IN_FLIGHT_TARGET:.0%} of the baseline pipelining {WINDOW} on one connection",
)

Build = Callable[[Addresses], Workload]


@dataclass(frozen=True)
class Row:
    """One line of the table: an ecosys case and the baseline case it is compared with."""

    key: str
    label: str
    ecosys: Build
    baseline_label: str
    baseline: Build
    target: float | None = None


def stream_rows(kind: str) -> list[Row]:
    """The persistent and transient rows of one stream socket type ("tcp" or "uds")."""
    name = kind.upper()

    def address(a: Addresses) -> Any:
        return (a.host, a.port) if kind == "tcp" else a.uds

    def opener(a: Addresses) -> Any:
        return tcp_opener(a.host, a.port) if kind == "tcp" else uds_opener(a.uds)

    def ecosys_case(persistent: bool, concurrency: int) -> Build:
        return lambda a: ecosys_workload(
            ecosys_client(kind, address(a), persistent=persistent), concurrency
        )

    def baseline_case(worker: Any, count: int = 1) -> Build:
        return lambda a: workers_of(functools.partial(worker, opener(a)), count)

    return [
        Row(f"persistent_{kind}_1", f"persistent {name}, 1 at a time", ecosys_case(True, 1),
            f"{name} 1 at a time", baseline_case(baseline_sequential), SEQUENTIAL_TARGET),
        Row(f"persistent_{kind}_{WINDOW}", f"persistent {name}, {WINDOW} in flight",
            ecosys_case(True, WINDOW), f"{name} pipelined, window {WINDOW}",
            baseline_case(baseline_pipelined), IN_FLIGHT_TARGET),
        Row(f"transient_{kind}_1", f"transient {name}, 1 at a time", ecosys_case(False, 1),
            f"{name} transient, 1 at a time", baseline_case(baseline_transient)),
        Row(f"transient_{kind}_{WINDOW}", f"transient {name}, {WINDOW} in flight",
            ecosys_case(False, WINDOW), f"{name} transient, {WINDOW} tasks",
            baseline_case(baseline_transient, WINDOW)),
    ]


def udp_rows() -> list[Row]:
    """The UDP rows."""

    def ecosys_case(concurrency: int) -> Build:
        return lambda a: ecosys_workload(ecosys_client("udp", (a.host, a.port)), concurrency)

    def baseline_case(worker: Any) -> Build:
        return lambda a: workers_of(functools.partial(worker, a.host, a.port))

    return [
        Row("udp_1", "UDP, 1 at a time", ecosys_case(1),
            "UDP 1 at a time", baseline_case(baseline_udp_sequential)),
        Row(f"udp_{WINDOW}", f"UDP, {WINDOW} in flight", ecosys_case(WINDOW),
            f"UDP window {WINDOW}", baseline_case(baseline_udp_window)),
    ]


def all_rows() -> list[Row]:
    """Every row, in table order."""
    tcp, uds = stream_rows("tcp"), stream_rows("uds")
    # Targets first (persistent), then transient, then UDP.
    return tcp[:2] + uds[:2] + tcp[2:] + uds[2:] + udp_rows()


# ----- running ---------------------------------------------------------------


@dataclass
class Outcome:
    """The repetitions of one side (ecosys or baseline) of one row."""

    by_repetition: list[float | None]  # None where that repetition failed
    errors: list[str]

    @property
    def rates(self) -> list[float]:
        """The rates of the repetitions that succeeded."""
        return [rate for rate in self.by_repetition if rate is not None]

    @property
    def median(self) -> float | None:
        """Median round trips per second, None if every repetition failed."""
        rates = self.rates
        return statistics.median(rates) if rates else None


def middle_half(values: list[float]) -> tuple[float, float] | None:
    """The first and third quartiles of *values* (None for fewer than two)."""
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


async def measure_all(
    rows: list[Row], servers: dict[str, ServerProcess], args: argparse.Namespace, loop_kind: str
) -> dict[str, dict[str, Outcome]]:
    """Measure every row *args.repeats* times, repetitions interleaved across rows."""
    outcomes = {row.key: {side: Outcome([], []) for side in servers} for row in rows}
    for rep in range(args.repeats):
        progress(f"[{loop_kind}] repetition {rep + 1}/{args.repeats} ")
        for row in rows:
            # Alternating which side goes first keeps slow drift from favouring one.
            sides = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for side in sides:
                build = row.ecosys if side == "ecosys" else row.baseline
                outcome = outcomes[row.key][side]
                try:
                    rate = await measure(build(servers[side].addresses), args.warmup, args.seconds)
                except Exception as exc:
                    outcome.by_repetition.append(None)
                    outcome.errors.append(f"{type(exc).__name__}: {exc}")
                    progress("E")
                    # A server that is shutting down may still run for a moment.
                    await asyncio.sleep(0.2)
                    if not servers[side].responsive():
                        raise RuntimeError(
                            f"the {side} server died:\n{servers[side].output()}"
                        ) from exc
                    continue
                outcome.by_repetition.append(rate)
                progress(".")
        progress("\n")
    return outcomes


def run_loop(loop_kind: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Start both servers on *loop_kind*, measure every row from a client on the same loop kind."""
    rows = [row for row in all_rows() if not args.cases or row.key in args.cases]
    servers = {
        "ecosys": ServerProcess(f"ecosys_{loop_kind}", "ecosys_server.py", loop_kind, run_dir,
                                ("-i", "bench")),
        "baseline": ServerProcess(f"baseline_{loop_kind}", "baseline_server.py", loop_kind,
                                  run_dir),
    }
    try:
        for server in servers.values():
            server.start()
        with asyncio.Runner(loop_factory=loop_factory(loop_kind)) as runner:
            outcomes = runner.run(measure_all(rows, servers, args, loop_kind))
    finally:
        for server in servers.values():
            server.stop()
    return {"rows": [row_result(row, outcomes[row.key]) for row in rows]}


def row_result(row: Row, outcome: dict[str, Outcome]) -> dict[str, Any]:
    """The JSON record of one row."""
    ours, theirs = outcome["ecosys"], outcome["baseline"]
    ratios = paired_ratios(ours.by_repetition, theirs.by_repetition)
    ratio = statistics.median(ratios) if ratios else None
    middle = middle_half(ratios)
    passed = None if row.target is None or ratio is None else ratio >= row.target
    # The verdict is doubtful when the target lies inside the middle half of the
    # repetitions' ratios: another run's median could land on its other side.
    doubtful = (
        passed is not None and middle is not None and row.target is not None
        and middle[0] < row.target <= middle[1]
    )
    spreads = [max(o.rates) / min(o.rates) - 1 for o in (ours, theirs) if len(o.rates) > 1]
    of_medians = None
    if ours.median is not None and theirs.median:
        of_medians = ours.median / theirs.median
    return {
        "case": row.key,
        "label": row.label,
        "baseline_case": row.baseline_label,
        "ecosys": {"median": ours.median, "runs": ours.by_repetition, "errors": ours.errors},
        "baseline": {"median": theirs.median, "runs": theirs.by_repetition, "errors": theirs.errors},
        "ratio": ratio,
        "ratios": ratios,
        "ratio_middle_half": list(middle) if middle else None,
        "ratio_of_medians": of_medians,
        "doubtful": doubtful,
        "spread": max(spreads) if spreads else None,
        "target": row.target,
        "passed": passed,
    }


# ----- reporting -------------------------------------------------------------


def progress(text: str) -> None:
    """Show progress on stderr, so stdout holds only the tables."""
    sys.stderr.write(text)
    sys.stderr.flush()


def fmt_rate(value: float | None) -> str:
    """Round trips per second with thousands separators, or 'error'."""
    return "error" if value is None else f"{value:,.0f}"


def table(loop_kind: str, result: dict[str, Any], args: argparse.Namespace) -> str:
    """The table of one event loop kind as text."""
    header = ("case", "ecosys req/s", "baseline case", "baseline req/s", "ratio", "middle half",
              "target", "result")
    lines = [header]
    doubtful = False
    for r in result["rows"]:
        target = "-" if r["target"] is None else f">={r['target']:.0%}"
        verdict = {None: "-", True: "pass", False: "FAIL"}[r["passed"]]
        if r["target"] is not None and r["ratio"] is None:
            verdict = "error"
        if r["doubtful"]:
            verdict += "?"
            doubtful = True
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1%}"
        middle = r["ratio_middle_half"]
        middle_text = "-" if middle is None else f"{middle[0]:.0%}-{middle[1]:.0%}"
        lines.append((r["label"], fmt_rate(r["ecosys"]["median"]), r["baseline_case"],
                      fmt_rate(r["baseline"]["median"]), ratio, middle_text, target, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 2, 7}
    out = [
        f"event loop: {loop_kind}; req/s: median of {args.repeats} x {args.seconds:g} s; "
        "ratio: median over the repetitions of ecosys / baseline measured back to back; "
        "middle half: their first to third quartile"
    ]
    for n, line in enumerate(lines):
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    if doubtful:
        out.append("?: the target lies inside the middle half, so the verdict may flip on "
                   f"another run (every repetition is in {args.json.name})")
    errors = [
        f"  {r['label']} ({side}): {msg}"
        for r in result["rows"] for side in ("ecosys", "baseline") for msg in r[side]["errors"]
    ]
    if errors:
        out.append("errors:")
        out.extend(errors)
    return "\n".join(out)


def summary(results: dict[str, dict[str, Any]]) -> str:
    """The targets and how each loop kind did against them."""
    out = ["Targets from the issue:"]
    out.extend(f"  - {text}" for text in TARGETS_TEXT)
    for loop_kind, result in results.items():
        judged = [r for r in result["rows"] if r["target"] is not None]
        passed = sum(1 for r in judged if r["passed"])
        failed = ", ".join(r["label"] for r in judged if not r["passed"])
        missed = f" (not met: {failed})" if failed else ""
        out.append(f"  {loop_kind}: {passed}/{len(judged)} pass{missed}")
    return "\n".join(out)


def environment() -> dict[str, Any]:
    """What the numbers depend on besides the code."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "ecosys": ecosys.__version__,
        "build": build_kind(),  # "compiled" (mypyc) or "pure Python"
        "uvloop": uvloop_version(),
        "git": git_state(),
    }


def git_state() -> str | None:
    """The commit the numbers belong to, with "+dirty" for uncommitted changes under src/."""
    root = HERE.parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=5, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.strip() + ("+dirty" if dirty.strip() else "")


# ----- entry point -------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, seconds=0.5, warmup=0.2, repeats=7, quick=(0.2, 0.05),
                    json_path=JSON_PATH)
    keys = [row.key for row in all_rows()]
    parser.add_argument("--cases", type=lambda text: text.split(","), default=None,
                        metavar="KEY[,KEY...]",
                        help="measure only these rows (default all): " + ", ".join(keys))
    args = parse_run_options(parser, argv)
    unknown = sorted(set(args.cases or ()) - set(keys))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(keys)}")
    return args


def _terminated(signum: int, frame: Any) -> None:
    # Unwind like Ctrl-C so every finally block runs and the servers are stopped.
    raise SystemExit(128 + signum)


def recording_cost_us(calls: int = 200_000) -> float:
    """Microseconds the statistics keeper adds to one request, as Router.run spends them."""
    from time import perf_counter

    from ecosys.telemetry.stats import StatisticsKeeper

    keeper = StatisticsKeeper()
    record = keeper.record
    started = perf_counter()
    for _ in range(calls):
        # What the server adds per request: two clock reads and one record.
        begin = perf_counter()
        record("endpoints", "ping", 0, perf_counter() - begin)
    return (perf_counter() - started) / calls * 1e6


def recording_summary(results: dict[str, dict[str, Any]]) -> str:
    """The statistics keeper's cost per request against the one-at-a-time round trip."""
    cost = recording_cost_us()
    out = [f"Statistics recording: {cost:.2f} us per request (server side)"]
    for loop_kind, result in results.items():
        for r in result["rows"]:
            rate = r["ecosys"]["median"]
            if r["case"] in ("persistent_tcp_1", "persistent_uds_1") and rate:
                round_trip = 1e6 / rate
                out.append(f"  {loop_kind} {r['label']}: round trip {round_trip:.0f} us; "
                           f"recording is {100 * cost / round_trip:.2f}% of it (target: under 5%)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON; return the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    loop_kinds = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loop_kinds:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("uvloop is not installed: measuring the asyncio loop only", file=sys.stderr)
            loop_kinds.remove("uvloop")
            if not loop_kinds:
                return 1
    print(f"ecosys {ecosys.__version__}, {build_kind()} build", flush=True)
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run_dir = Path(tempfile.mkdtemp(prefix="ecosys-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for loop_kind in loop_kinds:
            results[loop_kind] = run_loop(loop_kind, args, run_dir)
            print(table(loop_kind, results[loop_kind], args), end="\n\n", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(summary(results))
    print(recording_summary(results))
    record = {
        "started": started_at,
        "duration_s": round(time.monotonic() - started, 1),
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "repeats": args.repeats,
                     "in_flight": WINDOW},
        "targets": {"sequential": SEQUENTIAL_TARGET, "in_flight": IN_FLIGHT_TARGET,
                    "text": list(TARGETS_TEXT)},
        "environment": environment(),
        "loops": results,
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nresults written to {args.json} ({record['duration_s']:g} s in all)")
    if args.strict:
        rows = [r for result in results.values() for r in result["rows"]]
        if any(r["passed"] is False or r["ecosys"]["errors"] or r["baseline"]["errors"]
               for r in rows):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
