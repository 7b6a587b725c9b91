"""A pending queue and its error queue: the durable state behind queued endpoints and senders."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import EcosysError
from .store import CommitListener, DurableQueue, Entry, Synchronous, select_entries

log = logging.getLogger("ecosys.queues")


class EntryNotFound(EcosysError):
    """No entry with the requested uid in the error queue."""

    @classmethod
    def for_uid(cls, uid: str) -> EntryNotFound:
        """The error for *uid*, worded the same wherever it is raised."""
        return cls(f"no request with uid {uid} in the error queue")


class QueuePair:
    """Pending entries (held in memory and on disk) and error entries (on disk).

    Moving an entry between the two writes the destination durably before
    deleting the source, and bumps the entry's generation, so a crash between
    the two steps leaves two copies of which the newer wins at the next open.
    """

    def __init__(
        self,
        pending_path: Path,
        error_path: Path,
        *,
        max_uncommitted: int = 0,
        commit_interval: float = 0.05,
        synchronous: Synchronous = "FULL",
    ) -> None:
        self.pending = DurableQueue(pending_path, max_uncommitted=max_uncommitted,
                                    commit_interval=commit_interval, synchronous=synchronous)
        self.errors = DurableQueue(error_path, commit_interval=commit_interval, synchronous=synchronous,
                                   index_uid=True)
        self.entries: dict[int, Entry] = {}
        self.error_count = 0
        self._next_seq = 1
        self._moving: set[int] = set()  # error entries on their way back to pending

    async def open(self) -> list[Entry]:
        """Open both files, settle interrupted moves; return pending entries in order."""
        pending = await self.pending.open()
        try:
            errors = await self.errors.open()
        except BaseException:
            await self.pending.close()  # its thread and file, opened for nothing
            raise
        error_generation = {e.seq: e.generation for e in errors}
        stale_pending = [e.seq for e in pending if error_generation.get(e.seq, -1) > e.generation]
        pending_generation = {e.seq: e.generation for e in pending}
        stale_errors = [e.seq for e in errors if pending_generation.get(e.seq, -1) > e.generation]
        if stale_pending:
            await self.pending.delete(stale_pending, durable=True)
        if stale_errors:
            await self.errors.delete(stale_errors, durable=True)
        dropped = set(stale_pending)
        live = [e for e in pending if e.seq not in dropped]
        self.entries = {e.seq: e for e in live}
        self.error_count = len(errors) - len(stale_errors)
        seqs = [e.seq for e in pending] + [e.seq for e in errors]
        self._next_seq = max(seqs, default=0) + 1
        return live

    @property
    def pending_count(self) -> int:
        """Entries waiting (or being worked on) in the pending queue."""
        return len(self.entries)

    async def push(
        self, uid: str, request: bytes, group_key: str | None = None, value: Any = None
    ) -> Entry:
        """Store a new entry; returns once it is as durable as the commit policy promises.

        *value* is the request already validated, kept in memory only (see Entry.value).
        If the caller is cancelled while it waits, the entry is stored all the same.
        """

        def stored(error: BaseException | None) -> None:
            if error is not None:
                self.forget(entry)

        entry, committed = self.push_nowait(uid, request, group_key, value, on_commit=stored)
        if committed is not None:
            # Shielded: the future is shared by the whole batch.
            await asyncio.shield(committed)
        return entry

    def push_nowait(
        self, uid: str, request: bytes, group_key: str | None = None, value: Any = None,
        on_commit: CommitListener | None = None,
    ) -> tuple[Entry, asyncio.Future[None] | None]:
        """Store a new entry; return it and the commit to wait for (None if none is due).

        If that commit fails, call :meth:`forget` with the entry. *on_commit*
        is called as :meth:`DurableQueue.insert_nowait` describes.
        """
        entries, committed = self.push_many_nowait([(uid, request, group_key, value)], on_commit)
        return entries[0], committed

    def push_many_nowait(
        self, items: list[tuple[str, bytes, str | None, Any]],
        on_commit: CommitListener | None = None,
    ) -> tuple[list[Entry], asyncio.Future[None] | None]:
        """Store new entries (uid, request, group key, value) in order with one insert.

        As :meth:`push_nowait` for each; *on_commit* hears once for all. If this
        raises, none is stored.
        """
        seq = self._next_seq
        entries = [Entry(seq=seq + n, uid=uid, request=request, group_key=group_key, value=value)
                   for n, (uid, request, group_key, value) in enumerate(items)]
        committed = self.pending.insert_nowait(entries, on_commit=on_commit)
        # Only once the insert took them: a refused insert leaves nothing to forget.
        self._next_seq = seq + len(entries)
        known = self.entries
        for entry in entries:
            known[entry.seq] = entry
        return entries, committed

    def forget(self, entry: Entry) -> None:
        """Drop an entry whose insert failed from the in-memory view."""
        self.entries.pop(entry.seq, None)

    def done(self, entry: Entry) -> None:
        """The entry was handled: forget it (removed from disk with the next commit)."""
        self.entries.pop(entry.seq, None)
        self.pending.delete_nowait([entry.seq])

    def count_attempt(self, entry: Entry) -> None:
        """Persist the entry's attempt count (with the next commit)."""
        self.pending.set_attempts_nowait(entry)

    async def fail(self, entry: Entry, reason: str) -> None:
        """Move the entry to the error queue with *reason*."""
        entry.generation += 1
        entry.reason = reason
        entry.failed_at = time.time()
        await self.errors.insert([entry], durable=True)
        self.entries.pop(entry.seq, None)
        self.error_count += 1
        self.pending.delete_nowait([entry.seq])

    async def error_entries(self, limit: int | None = None) -> list[Entry]:
        """The oldest entries of the error queue."""
        return await self.errors.read(select_entries(limit=limit))

    async def error_seqs(self) -> set[int]:
        """The sequence numbers in the error queue."""
        rows = await self.errors.read(lambda db: db.execute("SELECT seq FROM entries").fetchall())
        return {row[0] for row in rows}

    async def find_error(self, uid: str) -> Entry:
        """The oldest error entry with *uid*, or EntryNotFound."""
        found = await self.errors.read(select_entries("WHERE uid = ?", (uid,), limit=1))
        if not found:
            raise EntryNotFound.for_uid(uid)
        return found[0]

    async def pop_error(self, uid: str) -> Entry:
        """Remove and return an error entry."""
        entry = await self.find_error(uid)
        await self.errors.delete([entry.seq], durable=True)
        self.error_count -= 1
        return entry

    async def reprocess(self, entries: list[Entry]) -> list[Entry]:
        """Move error entries back to pending with attempts reset; returns them as now pending.

        Entries already pending, or being moved by a concurrent call (two
        operators reprocessing the same uid), are left out: each is moved once.
        """
        entries = [e for e in entries if e.seq not in self.entries and e.seq not in self._moving]
        if not entries:
            return []
        seqs = {e.seq for e in entries}
        self._moving |= seqs
        try:
            return await self._reprocess(entries)
        finally:
            self._moving -= seqs

    async def _reprocess(self, entries: list[Entry]) -> list[Entry]:
        for entry in entries:
            entry.generation += 1
            entry.attempts = 0
            entry.reason = None
            entry.failed_at = None
        await self.pending.insert(entries, durable=True)
        for entry in entries:
            self.entries[entry.seq] = entry
        seqs = [e.seq for e in entries]
        try:
            await self.errors.delete(seqs, durable=True)
        except Exception:
            # They are pending now (the newer copy, which wins at the next open
            # anyway): hand them on, and remove the stale error copies with the
            # error file's next commits, which retry until one succeeds.
            log.exception("removing %d reprocessed request(s) from %s failed; retrying",
                          len(entries), self.errors.path.name)
            self.errors.delete_nowait(seqs)
        self.error_count -= len(entries)
        return entries

    async def clear_errors(self) -> int:
        """Empty the error queue; returns how many entries were removed."""
        count = len(await self.error_entries())
        await self.errors.clear()
        self.error_count = 0
        return count

    async def close(self) -> None:
        """Commit and close both files (the second even if closing the first failed)."""
        try:
            await self.pending.close()
        finally:
            await self.errors.close()
