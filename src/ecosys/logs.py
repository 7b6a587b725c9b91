"""File logging that never blocks the event loop, with the request uid on every line.

Log calls only put records on an in-memory queue; a listener thread does the
formatting, writing, rotation and compression.
"""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import os
import queue
import select
import shutil
import sys
import threading
from pathlib import Path

from .tracking import current_uid

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(uid)s] %(message)s"
# Log lines waiting for stderr before new ones are dropped (stderr not being read).
CONSOLE_QUEUE_SIZE = 10_000
# How long closing waits for queued lines to reach a stderr that may be blocked.
CONSOLE_CLOSE_TIMEOUT = 1.0


class UidFilter(logging.Filter):
    """Stamps each record with the uid of the request being handled ("-" outside one).

    It runs in the thread and context that logged, which is what makes the
    context variable visible.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "uid"):
            record.uid = current_uid.get() or "-"
        return True


class ByteSizeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates before the file would grow past maxBytes bytes on disk.

    The standard handler measures the next line in characters: lines with
    non-ASCII text made every file overshoot log_max_size.
    """

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 (stdlib name)
        """True if writing *record* would take the file past maxBytes."""
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        position = self.stream.tell()
        if not position:
            return False  # an empty file takes the line, however long
        line = self.format(record) + self.terminator
        size = len(line) if line.isascii() else len(line.encode(self.encoding or "utf-8", "replace"))
        if position + size <= self.maxBytes:
            return False
        # Checked only when a rotation is due, not for every line (two stat calls):
        # never rotate a device or pipe (/dev/null).
        return not (os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename))


class ConsoleWriter:
    """Copies log lines to stderr on a thread of its own, dropping them when stderr is not read.

    A pipe nobody reads (a paused pager, a dead supervisor) blocks every
    write to it. On the file's thread that would stop file logging too, and
    joining it at shutdown would hang the process. Here the thread may block
    for good: the queue is bounded, new lines are dropped (and counted)
    while it is full, and close() waits for it a moment only.
    """

    def __init__(self, formatter: logging.Formatter, max_queued: int = CONSOLE_QUEUE_SIZE,
                 fd: int | None = None) -> None:
        self.formatter = formatter
        self.dropped = 0
        self.broken = False  # stderr refused a write for good; later lines are not shown
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(max_queued)
        # os.write on the descriptor, not sys.stderr.write: a thread blocked inside
        # the stream would hold its buffer lock, and the interpreter's final flush
        # of stderr would then fail fatally.
        self._fd = fd
        if fd is None:
            try:
                self._fd = sys.stderr.fileno()
            except (AttributeError, OSError, ValueError):
                pass  # replaced by something without a descriptor (a test capture)
        self._thread = threading.Thread(target=self._run, name="ecosys-log-console", daemon=True)
        self._thread.start()

    def put(self, record: logging.LogRecord) -> None:
        """Queue *record* for stderr; drop it if the queue is full or stderr is gone."""
        if self.broken:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            try:
                line = self.formatter.format(record) + "\n"
                if self._fd is not None:
                    self._write_fd(self._fd, line.encode("utf-8", "backslashreplace"))
                else:
                    sys.stderr.write(line)
                    sys.stderr.flush()
            except OSError:
                self.broken = True
                return  # stderr is closed for good (EPIPE, EBADF): nothing more can be shown there
            except Exception:
                pass  # one unformattable record must not end console logging

    @staticmethod
    def _write_fd(fd: int, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                # A non-blocking pipe (as some parents leave stderr) that is full for
                # now: wait until it takes more, as a blocking one would.
                select.select([], [fd], [], 1.0)

    def close(self, timeout: float = CONSOLE_CLOSE_TIMEOUT) -> bool:
        """Let queued lines out for at most *timeout* seconds; False if stderr stayed blocked."""
        if not self._thread.is_alive():
            return True  # ended already (stderr closed): nothing will be let out
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _ConsoleHandler(logging.Handler):
    """Hands records from the file listener's thread to the console writer."""

    def __init__(self, writer: ConsoleWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self.writer.put(record)


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


def _gzip_namer(name: str) -> str:
    return name + ".gz"


# The LogSetups installed now, oldest first (several applications in one process),
# and the root logger's level before the first of them.
_installed: list[LogSetup] = []
_level_before = logging.WARNING


class LogSetup:
    """The installed handlers; :meth:`close` flushes and removes them."""

    def __init__(
        self,
        path: Path,
        *,
        level: str = "INFO",
        max_size: int = 10 * 1024 * 1024,
        backups: int = 5,
        compress: bool = False,
        console: bool = False,
    ) -> None:
        if level not in logging.getLevelNamesMapping():
            # Checked before anything is installed: a failure half-way would leave a
            # handler on the root logger that nothing drains.
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        path.parent.mkdir(parents=True, exist_ok=True)
        formatter = logging.Formatter(LOG_FORMAT)
        file_handler = ByteSizeRotatingFileHandler(
            path, maxBytes=max_size, backupCount=backups, encoding="utf-8"
        )
        if compress:
            file_handler.rotator = _gzip_rotator
            file_handler.namer = _gzip_namer
        file_handler.setFormatter(formatter)
        handlers: list[logging.Handler] = [file_handler]
        self.console: ConsoleWriter | None = None
        if console:
            self.console = ConsoleWriter(formatter)
            handlers.append(_ConsoleHandler(self.console))
        self.path = path
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.queue_handler = logging.handlers.QueueHandler(self._queue)
        self.queue_handler.addFilter(UidFilter())
        self.listener = logging.handlers.QueueListener(
            self._queue, *handlers, respect_handler_level=False
        )
        self._handlers = handlers
        self._root = logging.getLogger()
        self.level = level
        global _level_before
        if not _installed:
            _level_before = self._root.level
        _installed.append(self)
        self._root.addHandler(self.queue_handler)
        self._root.setLevel(level)
        self.listener.start()

    def close(self) -> None:
        """Write out what is queued, then detach and close every handler."""
        self._root.removeHandler(self.queue_handler)
        if self in _installed:
            _installed.remove(self)
        # Another application's logging still installed keeps its level; the last
        # one out restores what the root logger had before the first came.
        self._root.setLevel(_installed[-1].level if _installed else _level_before)
        self.listener.stop()
        console = self.console
        if console is not None:
            blocked = not console.close()
            if console.dropped or blocked:
                # To the file only: stderr is where the lines went missing.
                why = "was closed" if console.broken else "was not being read"
                self._handlers[0].handle(logging.makeLogRecord({
                    "name": "ecosys.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                    "uid": "-",
                    "msg": f"stderr {why}: {console.dropped} console log line(s) dropped"
                           + (", and the last ones may never show" if blocked else ""),
                }))
        for handler in self._handlers:
            handler.close()
