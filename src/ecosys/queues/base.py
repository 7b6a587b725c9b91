"""What queued endpoints and queued senders share: their two files and how they are opened."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from ..errors import ConfigurationError, Reject
from ..protocol import Status
from .pair import QueuePair
from .store import SYNCHRONOUS_LEVELS, Entry, Synchronous

log = logging.getLogger("ecosys.queues")


def file_name_part(key: str) -> str:
    """*key* as it appears in its queue files' names: a '/' or '\\' would make a subdirectory.

    Names without either are used as they are (the files of existing queues keep their names).
    """
    if "/" not in key and "\\" not in key:
        return key
    return key.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")


class QueueStorage:
    """The pending/error file pair of one queue, named ``<prefix>-<key>-<kind>-pending.sqlite``."""

    kind = "queue"

    def _init_storage(
        self, key: str, *, max_uncommitted: int, commit_interval: float, synchronous: Synchronous
    ) -> None:
        if max_uncommitted < 0 or commit_interval <= 0:
            raise ConfigurationError(
                f"queue {key!r}: max_uncommitted must be >= 0 and commit_interval > 0"
            )
        if not key or "\0" in key:
            raise ConfigurationError(
                f"queue {key!r}: the name of a queued endpoint or sender names its files in the "
                "queue directory, so it cannot be empty or hold NUL"
            )
        if synchronous not in SYNCHRONOUS_LEVELS:
            # SQLite reads an unknown level as NORMAL: a typo would quietly weaken durability.
            raise ConfigurationError(
                f"queue {key!r}: synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, "
                f"not {synchronous!r}"
            )
        self.queue_key = key
        self.max_uncommitted = max_uncommitted
        self.commit_interval = commit_interval
        self.synchronous = synchronous
        self.pair: QueuePair | None = None

    def file_paths(self, queue_dir: Path, prefix: str) -> tuple[Path, Path]:
        """The pending and error files of this queue."""
        base = f"{prefix}-{file_name_part(self.queue_key)}-{self.kind}"
        return queue_dir / f"{base}-pending.sqlite", queue_dir / f"{base}-error.sqlite"

    async def _open_storage(self, queue_dir: Path, prefix: str) -> list[Entry]:
        """Open both files; return the pending entries an earlier run left, in order."""
        pending_path, error_path = self.file_paths(queue_dir, prefix)
        if file_name_part(self.queue_key) != self.queue_key:
            await asyncio.to_thread(self._move_legacy_files, queue_dir, prefix)
        pair = QueuePair(pending_path, error_path, max_uncommitted=self.max_uncommitted,
                         commit_interval=self.commit_interval, synchronous=self.synchronous)
        entries = await pair.open()
        self.pair = pair
        return entries

    def _move_legacy_files(self, queue_dir: Path, prefix: str) -> None:
        # Before names were encoded, a '/' in one put the files in a subdirectory.
        legacy = f"{prefix}-{self.queue_key}-{self.kind}"
        for part, new_path in zip(("pending", "error"), self.file_paths(queue_dir, prefix), strict=True):
            old_path = queue_dir / f"{legacy}-{part}.sqlite"
            if not old_path.is_file():
                continue
            if new_path.exists():
                log.warning("queue %r: both %s and %s exist; using the second (move or merge the "
                            "first by hand)", self.queue_key, old_path, new_path)
                continue
            # The main file last: its presence at the new name means the move is complete.
            for suffix in ("-wal", "-shm", ""):
                source = Path(f"{old_path}{suffix}")
                if source.exists():
                    os.replace(source, f"{new_path}{suffix}")
            log.warning("queue %r: moved %s to %s (queue files no longer go into subdirectories)",
                        self.queue_key, old_path, new_path)

    async def _close_storage(self) -> None:
        if self.pair is not None:
            await self.pair.close()
            self.pair = None

    def require_pair(self) -> QueuePair:
        """The open queue pair, or a status-500 rejection while the queue is closed."""
        if self.pair is None:
            raise Reject(Status.APPLICATION_BUSY, f"queue {self.queue_key!r} is not open")
        return self.pair
