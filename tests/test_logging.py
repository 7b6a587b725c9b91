"""File logging: size-based rotation, compression, the uid on every line, no blocking of the loop."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apphelpers import APPS_DIR, START_TIMEOUT, STOP_TIMEOUT, app_env, socket_friendly_dir

from ecosys import ConfigurationError, UdsClient, uid_scope
from ecosys.config import load_settings
from ecosys.logs import LogSetup

log = logging.getLogger("test.logging")
RECORD = re.compile(r"record (\d+) ")


@pytest.fixture
def setups() -> Iterator[list[LogSetup]]:
    """LogSetups made by a test; closed even if the test fails (they hook the root logger)."""
    made: list[LogSetup] = []
    yield made
    for setup in made:
        setup.close()


def open_log(setups: list[LogSetup], path: Path, **options: object) -> LogSetup:
    setup = LogSetup(path, **options)  # type: ignore[arg-type]
    setups.append(setup)
    return setup


def close_log(setups: list[LogSetup], setup: LogSetup) -> None:
    setups.remove(setup)
    setup.close()


def read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    return path.read_text(encoding="utf-8")


def record_numbers(path: Path) -> list[int]:
    return [int(m.group(1)) for m in RECORD.finditer(read_text(path))]


def write_records(count: int, width: int = 40) -> None:
    for i in range(count):
        log.info("record %05d %s", i, "x" * width)


def test_rotation_at_max_size_keeps_backups_newest_first(tmp_path: Path, setups: list[LogSetup]) -> None:
    path = tmp_path / "app-1.log"
    setup = open_log(setups, path, max_size=1024, backups=3)
    write_records(300)
    close_log(setups, setup)

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["app-1.log", "app-1.log.1", "app-1.log.2", "app-1.log.3"], (
        f"expected the log and exactly 3 backups: {files}"
    )
    one_line = len(path.read_text().splitlines()[0]) + 1
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert size <= 1024, f"{name} is {size} bytes, over log_max_size 1024"
        if name != "app-1.log":
            assert size > 1024 - one_line, f"{name} was rotated at {size} bytes, well before 1024"

    newest, older, oldest = (record_numbers(tmp_path / f"app-1.log.{n}") for n in (1, 2, 3))
    current = record_numbers(path)
    assert current[-1] == 299, "the current file holds the last record"
    assert max(oldest) < min(older) and max(older) < min(newest) and max(newest) < min(current), (
        f".1 must hold newer lines than .2, .2 than .3: {oldest[-1]=}, {older[0]=}..{older[-1]=}, "
        f"{newest[0]=}..{newest[-1]=}, {current[0]=}"
    )
    kept = oldest + older + newest + current
    assert kept == list(range(kept[0], 300)), "no record may be lost between the kept files"


def test_rotation_with_compression_writes_gzip_files(tmp_path: Path, setups: list[LogSetup]) -> None:
    path = tmp_path / "app-1.log"
    setup = open_log(setups, path, max_size=1024, backups=2, compress=True)
    write_records(200)
    close_log(setups, setup)

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["app-1.log", "app-1.log.1.gz", "app-1.log.2.gz"], f"expected .gz backups only: {files}"
    for name in ("app-1.log.1.gz", "app-1.log.2.gz"):
        raw = (tmp_path / name).read_bytes()
        assert raw[:2] == b"\x1f\x8b", f"{name} is not gzip data"
        text = gzip.decompress(raw).decode("utf-8")
        assert text.endswith("\n") and "INFO" in text and "test.logging" in text, f"{name} is not log text"
    newest, older = record_numbers(tmp_path / "app-1.log.1.gz"), record_numbers(tmp_path / "app-1.log.2.gz")
    current = record_numbers(path)
    assert max(older) < min(newest) and max(newest) < min(current), ".1.gz must be newer than .2.gz"
    assert older + newest + current == list(range(older[0], 200)), "no record lost across compressed files"


def test_log_max_size_minimum_is_1024() -> None:
    with pytest.raises(ConfigurationError, match="ECOENV_LOG_MAX_SIZE"):
        load_settings("app", "1", environ={"ECOENV_LOG_MAX_SIZE": "1023"})
    assert load_settings("app", "1", environ={"ECOENV_LOG_MAX_SIZE": "1024"}).log_max_size == 1024


def test_uid_on_every_line(tmp_path: Path, setups: list[LogSetup]) -> None:
    path = tmp_path / "uid.log"
    setup = open_log(setups, path)
    explicit = "6a1f1a5e-8b0d-4e4b-9f3c-2d5e6f7a8b9c"
    log.info("outside any request")
    with uid_scope(explicit) as chosen:
        log.info("inside the explicit scope")
        with uid_scope() as fresh:
            log.warning("inside a fresh scope")
        log.info("back in the explicit scope")
    close_log(setups, setup)
    lines = path.read_text().splitlines()

    def line_with(text: str) -> str:
        found = [line for line in lines if line.endswith(text)]
        assert len(found) == 1, f"expected one line ending with {text!r}: {lines}"
        return found[0]

    assert chosen == explicit
    assert f"[{explicit}] inside the explicit scope" in line_with("inside the explicit scope")
    assert f"[{fresh}] inside a fresh scope" in line_with("inside a fresh scope")
    assert f"[{explicit}] back in the explicit scope" in line_with("back in the explicit scope")
    assert "[-] outside any request" in line_with("outside any request")


async def test_uid_from_concurrent_coroutines(tmp_path: Path, setups: list[LogSetup]) -> None:
    path = tmp_path / "co.log"
    setup = open_log(setups, path)
    uids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]

    async def work(uid: str) -> None:
        with uid_scope(uid):
            for step in range(3):
                await asyncio.sleep(0.001)
                log.info("task %s step %d", uid[-1], step)

    await asyncio.gather(*(work(u) for u in uids))
    close_log(setups, setup)
    for line in path.read_text().splitlines():
        match = re.search(r"\[([^\]]+)\] task (\d) step", line)
        assert match, line
        assert match.group(1)[-1] == match.group(2), f"a line carries another task's uid: {line}"


class SlowRecorder(logging.Handler):
    """A handler that takes 3 ms per record and notes the thread it runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.003)
        self.threads.add(threading.current_thread().name)
        self.count += 1


async def test_logging_from_a_coroutine_does_not_block_the_loop(tmp_path: Path, setups: list[LogSetup]) -> None:
    setup = open_log(setups, tmp_path / "nb.log")
    file_threads: set[str] = set()
    file_handler = setup.listener.handlers[0]
    original_emit = file_handler.emit

    def recording_emit(record: logging.LogRecord) -> None:
        file_threads.add(threading.current_thread().name)
        original_emit(record)

    file_handler.emit = recording_emit  # type: ignore[method-assign]
    slow = SlowRecorder()
    setup.listener.handlers = (*setup.listener.handlers, slow)

    count = 200  # 0.6 s of handler work if it ran in the caller
    started = time.perf_counter()
    for i in range(count):
        log.info("record %05d from the loop", i)
    elapsed = time.perf_counter() - started
    loop_thread = threading.current_thread().name
    close_log(setups, setup)

    assert elapsed < 0.3, f"{count} log calls took {elapsed:.2f}s: handler work is done on the loop"
    assert slow.count == count, f"close() must flush every queued record ({slow.count}/{count})"
    assert loop_thread not in file_threads | slow.threads, (
        f"file writes ran on the loop thread {loop_thread!r}: {file_threads | slow.threads}"
    )
    assert record_numbers(tmp_path / "nb.log") == list(range(count)), "every record reaches the file, in order"


async def test_many_log_calls_in_the_loop_are_fast(tmp_path: Path, setups: list[LogSetup]) -> None:
    setup = open_log(setups, tmp_path / "fast.log", max_size=64 * 1024, backups=2)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    # Measure ecosys alone: pytest's own capture handlers format every record on this thread.
    root = logging.getLogger()
    others = [h for h in root.handlers if h is not setup.queue_handler]
    for handler in others:
        root.removeHandler(handler)
    tick_task = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        for batch in range(100):
            for i in range(100):
                log.info("batch %d record %d", batch, i)
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
    finally:
        for handler in others:
            root.addHandler(handler)
        stop.set()
        await tick_task
    close_log(setups, setup)
    # About 0.5 s on a 2-core box while the listener thread writes and rotates alongside.
    assert elapsed < 2.0, f"10k log calls took {elapsed:.2f}s in the loop"
    assert ticks >= 90, f"the loop stalled while logging: only {ticks} ticks in 100 batches"


def test_close_restores_root_logger(tmp_path: Path) -> None:
    root = logging.getLogger()
    before_level, before_handlers = root.level, list(root.handlers)
    setup = LogSetup(tmp_path / "r.log", level="DEBUG")
    try:
        assert root.level == logging.DEBUG
    finally:
        setup.close()
    assert root.level == before_level and root.handlers == before_handlers, "close() must undo the setup"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_rotation_counts_bytes_not_characters(tmp_path: Path, setups: list[LogSetup], compress: bool) -> None:
    path = tmp_path / "app-1.log"
    setup = open_log(setups, path, max_size=1024, backups=40, compress=compress)
    for i in range(200):
        # Two bytes per character, in lines of many lengths: some land just under the limit.
        log.info("record %05d %s", i, "é" * (20 + i % 37))
    close_log(setups, setup)
    sizes = {p.name: (gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes())
             for p in tmp_path.iterdir()}
    assert len(sizes) > 20, sorted(sizes)
    for name, data in sizes.items():
        assert len(data) <= 1024, f"{name} holds {len(data)} bytes, over log_max_size 1024"
        assert data.decode("utf-8").endswith("\n"), f"{name} ends in the middle of a line"


def test_console_writer_drops_lines_while_stderr_is_not_read_and_closes_anyway() -> None:
    from ecosys.logs import ConsoleWriter

    read_end, write_end = os.pipe()
    try:
        # A full pipe, as a stderr nobody has read for a while.
        os.set_blocking(write_end, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_end, b"z" * 4096)
        os.set_blocking(write_end, True)
        writer = ConsoleWriter(logging.Formatter("%(message)s"), max_queued=10, fd=write_end)
        for i in range(2000):
            writer.put(logging.makeLogRecord({"msg": f"{i:05d} " + "y" * 200}))
        started = time.monotonic()
        assert writer.close(timeout=0.3) is False, "nobody reads the pipe: the writer is still blocked"
        assert time.monotonic() - started < 2, "close() must not wait for a blocked stderr"
        assert writer.dropped > 1000
    finally:
        os.close(read_end)  # the blocked write fails now, and the thread ends
        os.close(write_end)


def test_a_blocked_stderr_neither_stops_file_logging_nor_hangs_shutdown(tmp_path: Path) -> None:
    with socket_friendly_dir(tmp_path) as run_dir:
        sock = run_dir / "chatty.sock"
        process = subprocess.Popen(
            [sys.executable, str(APPS_DIR / "chatty_server.py"), "-i", "0", "--uds", str(sock),
             "--log_console"],
            env=app_env(ECOENV_DEFAULT_DIR=run_dir), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # stderr: a pipe nobody reads
        )
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:  # the banner, within START_TIMEOUT
                selector.register(process.stdout, selectors.EVENT_READ)
                assert selector.select(START_TIMEOUT), "no start-up banner"
            assert b" listening on " in process.stdout.readline()

            async def chatter() -> int:
                async with UdsClient(str(sock), timeout=30) as client:
                    return int(await client.request("chatter", 12_000))

            assert asyncio.run(chatter()) == 12_000
            log_file = run_dir / "chatty-0.log"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if sum(1 for line in log_file.open(encoding="utf-8") if " chatter " in line) == 12_000:
                    break
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=STOP_TIMEOUT) == 0, "shutdown hung on a blocked stderr"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        text = log_file.read_text(encoding="utf-8")
        assert sum(1 for line in text.splitlines() if " chatter " in line) == 12_000, "file logging stalled"
        assert "stderr was not being read" in text.splitlines()[-1]
        assert not (run_dir / "chatty-0.lock").exists()


def test_console_writer_waits_out_a_full_non_blocking_stderr() -> None:
    from ecosys.logs import ConsoleWriter

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # as some parents leave stderr
    writer = ConsoleWriter(logging.Formatter("%(message)s"), fd=write_end)
    try:
        for i in range(600):  # about 120 KiB: more than the pipe holds
            writer.put(logging.makeLogRecord({"msg": f"{i:05d} " + "w" * 200}))
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"\n") < 600 and time.monotonic() < deadline:
            received += os.read(read_end, 65536)
        assert received.count(b"\n") == 600, "lines were lost on a full non-blocking pipe"
        writer.put(logging.makeLogRecord({"msg": "after the burst"}))
        assert writer.close(timeout=5)
        assert os.read(read_end, 65536) == b"after the burst\n"
        assert writer.dropped == 0 and not writer.broken
    finally:
        os.close(read_end)
        os.close(write_end)


def test_closing_one_of_two_log_setups_keeps_the_others_level(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = root.level
    first = LogSetup(tmp_path / "first.log", level="INFO")
    second = LogSetup(tmp_path / "second.log", level="DEBUG")
    try:
        first.close()
        assert root.level == logging.DEBUG, "the setup still installed keeps its level"
        log.debug("second still logs at DEBUG")
    finally:
        second.close()
    assert root.level == before, "the last one out restores the level from before the first"
    assert "second still logs at DEBUG" in (tmp_path / "second.log").read_text()


def test_an_unknown_level_installs_nothing(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        LogSetup(tmp_path / "bad.log", level="verbose")
    assert root.handlers == handlers, "a failed setup left a handler on the root logger"
    good = LogSetup(tmp_path / "good.log", level="INFO")
    good.close()  # unaffected by the failed one
    assert root.handlers == handlers
