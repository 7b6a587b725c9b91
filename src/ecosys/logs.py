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
import shutil
import sys
from pathlib import Path

from .tracking import current_uid

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(uid)s] %(message)s"


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
        if os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename):
            return False  # never rotate a device or pipe (/dev/null)
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        position = self.stream.tell()
        if not position:
            return False  # an empty file takes the line, however long
        line = self.format(record) + self.terminator
        return position + len(line.encode(self.encoding or "utf-8", "replace")) > self.maxBytes


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


def _gzip_namer(name: str) -> str:
    return name + ".gz"


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
        path.parent.mkdir(parents=True, exist_ok=True)
        formatter = logging.Formatter(LOG_FORMAT)
        file_handler = ByteSizeRotatingFileHandler(
            path, maxBytes=max_size, backupCount=backups, encoding="utf-8"
        )
        if compress:
            file_handler.rotator = _gzip_rotator
            file_handler.namer = _gzip_namer
        handlers: list[logging.Handler] = [file_handler]
        if console:
            handlers.append(logging.StreamHandler(sys.stderr))
        for handler in handlers:
            handler.setFormatter(formatter)
        self.path = path
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.queue_handler = logging.handlers.QueueHandler(self._queue)
        self.queue_handler.addFilter(UidFilter())
        self.listener = logging.handlers.QueueListener(
            self._queue, *handlers, respect_handler_level=False
        )
        self._handlers = handlers
        self._root = logging.getLogger()
        self._previous_level = self._root.level
        self._root.addHandler(self.queue_handler)
        self._root.setLevel(level)
        self.listener.start()

    def close(self) -> None:
        """Write out what is queued, then detach and close every handler."""
        self._root.removeHandler(self.queue_handler)
        self._root.setLevel(self._previous_level)
        self.listener.stop()
        for handler in self._handlers:
            handler.close()
