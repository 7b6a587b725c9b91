"""Durable queue benchmark: acknowledged messages per second into a queued endpoint, and more.

Run it:  .venv/bin/python benchmarks/queues/run.py [--seconds S] [--quick] [--loop KIND] [--dir D]
See README.md in this directory for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import ServerProcess, stop_all
from workloads import (
    check_echo,
    check_queued,
    measure_delivery,
    measure_requests,
    sample_requests,
    sqlite_insert_rate,
    wait_drained,
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
REPO = HERE.parent.parent
JSON_PATH = HERE / "last_run.json"
WINDOW = 64
MAX_UNCOMMITTED = (0, 1000)
DRAIN_TIMEOUT = 120.0
# A sender batch is sized to take about this fraction of --seconds.
DELIVERY_FRACTION = 0.5
MIN_BATCH = 500
MAX_BATCH = 50_000
PROBE_BATCH = 2000
# Repetitions further apart than this factor make a row's verdict doubtful.
NOISY = 1.25

TARGET_RATE = 10_000.0
TARGET_VS_SQLITE = 1.7
TARGET_VS_PLAIN = 0.5
TARGET_CASE = f"queued_mu0_{WINDOW}"


# ----- cases -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    key: str
    label: str
    kind: str  # "sqlite", "requests" or "delivery"
    params: dict[str, Any] = field(default_factory=dict)


SQLITE_CASES = [
    Case("sqlite_per_row", "raw sqlite3 insert, commit per row", "sqlite", {"rows": 1}),
    Case("sqlite_per_1000", "raw sqlite3 insert, commit per 1,000 rows", "sqlite", {"rows": 1000}),
]


def loop_cases() -> list[Case]:
    """The cases measured once per event loop kind, in table order."""
    cases = [
        Case("plain_64", f"plain @endpoint, {WINDOW} in flight", "requests",
             {"server": "plain", "route": "echo", "concurrency": WINDOW}),
    ]
    for mu in MAX_UNCOMMITTED:
        for concurrency in (1, WINDOW):
            cases.append(Case(
                f"queued_mu{mu}_{concurrency}",
                f"@queued_endpoint, max_uncommitted={mu}, {concurrency} in flight", "requests",
                {"server": f"queued_mu{mu}", "route": "store", "concurrency": concurrency},
            ))
    cases += [
        Case("sender", "@queued_sender -> @endpoint, delivered", "delivery", {"sender": "outbox"}),
        Case("sender_seq", "@queued_sender sequenced, 8 groups, delivered", "delivery",
             {"sender": "outbox_seq"}),
    ]
    return cases


# ----- servers -----------------------------------------------------------------------


def start_servers(loop_kind: str, data_dir: Path) -> dict[str, ServerProcess]:
    """The four server processes of one event loop kind, started and ready."""
    base = data_dir / loop_kind
    servers: dict[str, ServerProcess] = {}
    for mu in MAX_UNCOMMITTED:
        servers[f"queued_mu{mu}"] = ServerProcess(
            f"queued_mu{mu}", "queued_server.py", loop_kind, base,
            {"QBENCH_MAX_UNCOMMITTED": str(mu)},
        )
    servers["plain"] = ServerProcess("plain", "plain_server.py", loop_kind, base)
    servers["sender"] = ServerProcess("sender", "sender_server.py", loop_kind, base,
                                      {"QBENCH_TARGET_UDS": servers["plain"].uds})
    try:
        for server in servers.values():
            server.start()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: dict[str, ServerProcess]) -> None:
    """Stop every server that was started."""
    stop_all(list(servers.values()))


# ----- measuring ------------------------------------------------------------------------


@dataclass
class Outcome:
    """The repetitions of one case."""

    rates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """Median rate, None if every repetition failed."""
        return statistics.median(self.rates) if self.rates else None

    def record(self) -> dict[str, Any]:
        """The JSON form."""
        return {"median": self.median, "runs": self.rates, "errors": self.errors,
                "details": self.extras}


class Bench:
    """Everything one run measures, and the state shared between repetitions."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, loop_kinds: list[str]) -> None:
        self.args = args
        self.data_dir = data_dir
        self.loop_kinds = loop_kinds
        self.servers: dict[str, dict[str, ServerProcess]] = {}
        self.sqlite = {case.key: Outcome() for case in SQLITE_CASES}
        self.outcomes = {kind: {case.key: Outcome() for case in loop_cases()} for kind in loop_kinds}
        self.batch_sizes: dict[tuple[str, str], int] = {}
        self.next_seq = 0

    def run(self) -> None:
        """Start the servers, measure every case *repeats* times, stop the servers."""
        try:
            for kind in self.loop_kinds:
                progress(f"starting the {kind} servers\n")
                self.servers[kind] = start_servers(kind, self.data_dir)
            for rep in range(self.args.repeats):
                progress(f"repetition {rep + 1}/{self.args.repeats}: sqlite ")
                for case in SQLITE_CASES:
                    StopRequest.check()
                    self.measure_sqlite(case)
                # Alternating the order spreads slow drift of the machine over every case.
                kinds = self.loop_kinds if rep % 2 == 0 else self.loop_kinds[::-1]
                for kind in kinds:
                    progress(f" {kind} ")
                    StopRequest.check()
                    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
                        runner.run(self.measure_loop(kind, rep))
                    StopRequest.check()
                progress("\n")
        finally:
            stop_all([server for servers in self.servers.values() for server in servers.values()])

    def measure_sqlite(self, case: Case) -> None:
        outcome = self.sqlite[case.key]
        try:
            rate = sqlite_insert_rate(self.data_dir, case.params["rows"], self.args.warmup,
                                      self.args.seconds)
        except Exception as exc:
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
            progress("E")
            return
        outcome.rates.append(rate)
        progress(".")

    async def measure_loop(self, kind: str, rep: int) -> None:
        StopRequest.task = asyncio.current_task()
        try:
            await self._measure_cases(kind, rep)
        finally:
            StopRequest.task = None

    async def _measure_cases(self, kind: str, rep: int) -> None:
        cases = loop_cases() if rep % 2 == 0 else loop_cases()[::-1]
        for case in cases:
            StopRequest.check()
            outcome = self.outcomes[kind][case.key]
            try:
                if case.kind == "requests":
                    rate, extra = await self.measure_requests(kind, case)
                else:
                    rate, extra = await self.measure_delivery(kind, case)
            except Exception as exc:
                outcome.errors.append(f"{type(exc).__name__}: {exc}")
                progress("E")
                await asyncio.sleep(0.2)
                for name, server in self.servers[kind].items():
                    if not server.alive:
                        raise RuntimeError(f"the {kind} {name} server died:\n{server.output()}") from exc
                continue
            StopRequest.check()
            outcome.rates.append(rate)
            outcome.extras.append(extra)
            progress(".")

    async def measure_requests(self, kind: str, case: Case) -> tuple[float, dict[str, Any]]:
        server = self.servers[kind][case.params["server"]]
        queued = case.params["route"] == "store"
        before = (await wait_drained(server.uds, DRAIN_TIMEOUT))[0] if queued else None
        rate, answered = await measure_requests(
            server.uds, case.params["route"], check_queued if queued else check_echo,
            case.params["concurrency"], self.args.warmup, self.args.seconds,
        )
        if before is None:
            return rate, {}
        # Wait until the background worker has handled everything, so the next case starts clean.
        after, drain = await wait_drained(server.uds, DRAIN_TIMEOUT)
        commits = after["commits"] - before["commits"]
        return rate, {
            "acknowledged": answered,
            "commits": commits,
            # Commits of the pending file: inserts and deletes share them.
            "acks_per_commit": answered / commits if commits else None,
            "drain_seconds_after": drain,
        }

    async def measure_delivery(self, kind: str, case: Case) -> tuple[float, dict[str, Any]]:
        uds = self.servers[kind]["sender"].uds
        sender = case.params["sender"]
        size_key = (kind, sender)
        if size_key not in self.batch_sizes:
            # A first, unreported batch warms up and sizes the batch to about
            # DELIVERY_FRACTION * --seconds on this machine.
            probe = await self.deliver(uds, sender, PROBE_BATCH)
            wanted = probe["rate"] * self.args.seconds * DELIVERY_FRACTION
            self.batch_sizes[size_key] = min(MAX_BATCH, max(MIN_BATCH, int(round(wanted, -2))))
        count = self.batch_sizes[size_key]
        result = await self.deliver(uds, sender, count)
        return result.pop("rate"), {"messages": count, **result}

    async def deliver(self, uds: str, sender: str, count: int) -> dict[str, Any]:
        first, self.next_seq = self.next_seq, self.next_seq + count
        return await measure_delivery(uds, sender, first, count, timeout=max(60.0, count / 100))


# ----- results --------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None if either is missing."""
    return a / b if a is not None and b else None


def paired(values: list[float], references: list[float]) -> list[float]:
    """Ratios of the repetitions measured side by side (empty if a repetition failed)."""
    if len(values) != len(references) or not all(references):
        return []  # rates hold only the repetitions that succeeded: no longer aligned
    return paired_ratios(values, references)


def paired_median(values: Outcome, references: Outcome) -> float | None:
    """The median of the per-repetition ratios (see paired_ratios); the ratio of the medians if a repetition failed."""
    pairs = paired(values.rates, references.rates)
    if pairs:
        return statistics.median(pairs)
    return ratio(values.median, references.median)


def targets(loop_result: dict[str, Outcome], sqlite_row: Outcome) -> list[dict[str, Any]]:
    """The issue's three checks for one event loop kind (ratios are paired by repetition)."""
    queued = loop_result[TARGET_CASE]
    plain = loop_result["plain_64"]
    checks = [
        ("a", f"{WINDOW} in flight, max_uncommitted=0: >= {TARGET_RATE:,.0f} acknowledged msgs/s",
         queued.median, None, TARGET_RATE, None, queued.rates),
        ("b", f"{WINDOW} in flight, max_uncommitted=0: >= {TARGET_VS_SQLITE:g}x raw sqlite3 "
              "commit-per-row", paired_median(queued, sqlite_row),
         ratio(queued.median, sqlite_row.median), TARGET_VS_SQLITE,
         sqlite_row.median, paired(queued.rates, sqlite_row.rates)),
        ("c", f"{WINDOW} in flight, max_uncommitted=0: >= {TARGET_VS_PLAIN:.0%} of plain @endpoint "
              f"at {WINDOW} in flight", paired_median(queued, plain),
         ratio(queued.median, plain.median), TARGET_VS_PLAIN,
         plain.median, paired(queued.rates, plain.rates)),
    ]
    return [
        {"id": ident, "text": text, "value": value, "ratio_of_medians": of_medians,
         "target": target,
         "needed_rate": None if reference is None else target * reference,
         "passed": None if value is None else value >= target,
         # Per repetition (same repetition, seconds apart): the pairs the value is the median of.
         "per_repetition": runs,
         "repetitions_passed": sum(run >= target for run in runs)}
        for ident, text, value, of_medians, target, reference, runs in checks
    ]


def progress(text: str) -> None:
    """Progress goes to stderr; stdout holds only the results."""
    sys.stderr.write(text)
    sys.stderr.flush()


def fmt_rate(value: float | None) -> str:
    """A rate with thousands separators, or 'error'."""
    return "error" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio as 1.23x, or '-'."""
    return "-" if value is None else f"{value:.2f}x"


def note(case: Case, outcome: Outcome) -> str:
    """Extra facts shown after a row."""
    if not outcome.extras:
        return ""
    if case.kind == "delivery":
        enqueue = statistics.median(e["enqueue_seconds"] / e["seconds"] for e in outcome.extras)
        return f"M={outcome.extras[0]['messages']:,}; enqueueing took {enqueue:.0%} of the time"
    if case.kind == "requests" and "acks_per_commit" in outcome.extras[0]:
        per_commit = [e["acks_per_commit"] for e in outcome.extras if e["acks_per_commit"]]
        if per_commit:
            return f"{statistics.median(per_commit):,.1f} acks per commit"
    return ""


def noisy(outcome: Outcome) -> bool:
    """True when the fastest repetition beat the slowest by more than NOISY."""
    return len(outcome.rates) > 1 and max(outcome.rates) > NOISY * min(outcome.rates)


def table(kind: str, bench: Bench, checks: list[dict[str, Any]]) -> str:
    """The table of one event loop kind, with its verdicts."""
    args = bench.args
    outcomes = bench.outcomes[kind]
    sqlite_row = bench.sqlite["sqlite_per_row"].median
    plain = outcomes["plain_64"].median
    header = ("case", "msgs/s", "min-max", "vs sqlite/row", f"vs plain@{WINDOW}", "notes")
    lines = [header]
    rows = [(case, bench.sqlite[case.key]) for case in SQLITE_CASES]
    rows += [(case, outcomes[case.key]) for case in loop_cases()]
    flagged = []
    for case, outcome in rows:
        spread = (f"{min(outcome.rates):,.0f}-{max(outcome.rates):,.0f}"
                  if len(outcome.rates) > 1 else "-")
        if noisy(outcome):
            spread += " *"
            flagged.append(case.label)
        vs_plain = "-" if case.kind == "sqlite" else fmt_ratio(ratio(outcome.median, plain))
        lines.append((case.label, fmt_rate(outcome.median), spread,
                      fmt_ratio(ratio(outcome.median, sqlite_row)), vs_plain, note(case, outcome)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 5}
    out = [
        f"event loop: {kind} (client and servers); median of {args.repeats} x {args.seconds:g} s "
        f"per rate case (after {args.warmup:g} s warm-up); senders: M messages, "
        f"M sized to ~{DELIVERY_FRACTION * args.seconds:g} s",
    ]
    for n, line in enumerate(lines):
        cells = [cell.ljust(w) if i in left else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    if flagged:
        out.append(f"* noisy (fastest repetition > {NOISY - 1:.0%} above slowest): "
                   + "; ".join(flagged))
    for label, outcome in rows:
        for error in dict.fromkeys(outcome.errors):
            out.append(f"error in {label.label}: {error}")
    out.append(f"targets ({kind}):")
    for check in checks:
        verdict = {None: "ERROR", True: "PASS", False: "FAIL"}[check["passed"]]
        value, runs = check["value"], check["per_repetition"]
        if check["id"] == "a":
            shown = fmt_rate(value)
            each = ", ".join(fmt_rate(r) for r in runs)
        elif check["id"] == "b":
            shown = f"{fmt_ratio(value)} (needs {fmt_rate(check['needed_rate'])}/s)"
            each = ", ".join(fmt_ratio(r) for r in runs)
        else:
            shown = (f"{'-' if value is None else f'{value:.0%}'} "
                     f"(needs {fmt_rate(check['needed_rate'])}/s)")
            each = ", ".join(f"{r:.0%}" for r in runs)
        if len(runs) > 1:
            median_of = "" if check["id"] == "a" else " (the median of these)"
            shown += (f"; per repetition{median_of} {each}: "
                      f"{check['repetitions_passed']}/{len(runs)} pass")
        out.append(f"  {verdict}  ({check['id']}) {check['text']}: {shown}")
    return "\n".join(out)


def filesystem(path: Path) -> dict[str, Any]:
    """The mount point, device and type of the filesystem holding *path*."""
    path = path.resolve()
    mounts: list[tuple[str, str, str]] = []
    try:
        with open("/proc/mounts") as lines:
            for line in lines:
                device, point, fstype = line.split()[:3]
                mounts.append((point.replace("\\040", " "), device, fstype))
    except OSError:
        pass
    best = ("?", "?", "?")
    for point, device, fstype in mounts:
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best[0]):
            best = (point, device, fstype)
    return {"path": str(path), "mount": best[0], "device": best[1], "type": best[2],
            "st_dev": os.stat(path).st_dev}


def code_state() -> dict[str, Any]:
    """Which ecosys is measured: its path, git commit and uncommitted changes (if in git)."""
    package = Path(ecosys.__file__).resolve().parent
    state: dict[str, Any] = {"path": str(package), "git_head": None, "uncommitted": None}

    def git(*command: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *command], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head:
        state["git_head"] = head.strip()
        status = git("status", "--porcelain", "--", ".")
        if status is not None:
            state["uncommitted"] = [line[3:] for line in status.splitlines()]
    return state


def describe_code(state: dict[str, Any]) -> str:
    """One line about the measured ecosys."""
    text = f"ecosys measured: {state['path']}"
    if state["git_head"] is None:
        return text + " (not in a git checkout)"
    changes = state["uncommitted"]
    return text + f" (git {state['git_head']}" + (
        f"; UNCOMMITTED changes: {', '.join(changes)})" if changes else ", no uncommitted changes)")


def environment() -> dict[str, Any]:
    """What the numbers depend on besides the code."""
    import sqlite3

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "ecosys": ecosys.__version__,
        "build": build_kind(),  # "compiled" (mypyc) or "pure Python"
        "uvloop": uvloop_version(),
        "sqlite": sqlite3.sqlite_version,
        "request_bytes": len(sample_requests(1)[0]),
    }


# ----- entry point -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, seconds=3.0, warmup=0.3, quick=(0.3, 0.1), json_path=JSON_PATH)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary data directory goes (default: the system "
                             "temp dir); every queue file and the sqlite baseline go there")
    return parse_run_options(parser, argv)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the run stops and cleans up."""


class StopRequest:
    """Signal handling that works wherever the signal lands.

    Outside an event loop the handler raises Interrupted at once. Inside one
    it only cancels the task measuring: an exception raised from a signal
    handler in the middle of a uvloop protocol callback is caught by uvloop
    (logged as a fatal protocol error) and lost. The measuring code also
    checks :attr:`signum` after every case, so a stop is never missed.
    """

    signum: int | None = None
    task: asyncio.Task[Any] | None = None

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.signum = signum
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise Interrupted from None
        if cls.task is not None:
            cls.task.cancel()

    @classmethod
    def check(cls) -> None:
        """Raise Interrupted if a signal arrived."""
        if cls.signum is not None:
            raise Interrupted


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON; return the exit status."""
    args = parse_args(argv)
    # Our own SIGINT handler also keeps asyncio.Runner from installing its own.
    signal.signal(signal.SIGTERM, StopRequest.handler)
    signal.signal(signal.SIGINT, StopRequest.handler)
    loop_kinds = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loop_kinds:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("uvloop is not installed: measuring the asyncio loop only", file=sys.stderr)
            loop_kinds.remove("uvloop")
            if not loop_kinds:
                return 1
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    args.dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="ecosys-qbench-", dir=args.dir))
    data_fs, repo_fs = filesystem(data_dir), filesystem(REPO)
    same = "the same filesystem as" if data_fs["st_dev"] == repo_fs["st_dev"] else "NOT the same as"
    print(f"data directory: {data_dir} ({data_fs['type']} on {data_fs['device']}, mounted at "
          f"{data_fs['mount']}; {same} the repository). Every queue file and the sqlite "
          "baseline are written there (WAL, synchronous=FULL).\n", flush=True)
    code = code_state()
    print(describe_code(code) + "\n", flush=True)
    bench = Bench(args, data_dir, loop_kinds)
    try:
        bench.run()
    except (Interrupted, KeyboardInterrupt, asyncio.CancelledError):
        signum = StopRequest.signum or signal.SIGINT
        print(f"\n{signal.Signals(signum).name}: stopped; servers stopped", file=sys.stderr)
        return 128 + signum
    except RuntimeError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    loops: dict[str, Any] = {}
    for kind in loop_kinds:
        checks = targets(bench.outcomes[kind], bench.sqlite["sqlite_per_row"])
        print(table(kind, bench, checks), end="\n\n", flush=True)
        loops[kind] = {
            "cases": {case.key: {"label": case.label, **bench.outcomes[kind][case.key].record()}
                      for case in loop_cases()},
            "targets": checks,
        }
    record = {
        "started": started_at,
        "duration_s": round(time.monotonic() - started, 1),
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "repeats": args.repeats,
                     "in_flight": WINDOW, "delivery_fraction": DELIVERY_FRACTION},
        "data_dir": data_fs,
        "repository_fs": repo_fs,
        "environment": environment(),
        "code": code,
        "sqlite": {case.key: {"label": case.label, **bench.sqlite[case.key].record()}
                   for case in SQLITE_CASES},
        "loops": loops,
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results written to {args.json} ({record['duration_s']:g} s in all)")
    if args.strict:
        failed = any(c["passed"] is not True for loop in loops.values() for c in loop["targets"])
        errors = any(o.errors for o in bench.sqlite.values()) or any(
            o.errors for outcomes in bench.outcomes.values() for o in outcomes.values())
        if failed or errors:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
