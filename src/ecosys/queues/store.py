"""A durable queue in one SQLite file, written by one thread, committed in groups.

Every change (insert, delete, attempt update) is appended to an in-memory
operation log; a flush applies the log in one transaction on the queue's own
thread, so the event loop never waits on disk. Callers that need durability
await a future that resolves once the transaction holding their change has
committed; concurrent callers share that commit (group commit).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ..errors import QueueFileError

log = logging.getLogger("ecosys.queues")

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
CommitListener = Callable[[BaseException | None], None]
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq        INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    uid        TEXT NOT NULL,
    request    BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    group_key  TEXT,
    created    REAL NOT NULL,
    reason     TEXT,
    failed_at  REAL
);
"""
# Only error queues are searched by uid (inspect, pop, reprocess one); an index
# on pending files would cost every insert and delete for nothing.
UID_INDEX = "CREATE INDEX IF NOT EXISTS entries_uid ON entries (uid)"


@dataclass(slots=True)
class Entry:
    """One queued request.

    ``seq`` orders entries and identifies them across the pending and error
    files; ``generation`` grows each time the entry moves between the two, so
    after a crash in the middle of a move the newer copy wins.
    """

    seq: int
    uid: str
    request: bytes
    attempts: int = 0
    group_key: str | None = None
    created: float = field(default_factory=time.time)
    generation: int = 0
    reason: str | None = None
    failed_at: float | None = None
    # (validated request,) as the handler takes it, kept in memory only (never
    # stored) for entries received by this process, so the worker need not
    # parse and validate them again; None for entries read from disk.
    value: tuple[Any] | None = field(default=None, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for the management endpoints."""
        try:
            request: Any = orjson.loads(self.request)
        except orjson.JSONDecodeError:
            request = self.request.decode(errors="replace")
        return {
            "uid": self.uid,
            "request": request,
            "attempts": self.attempts,
            "group_key": self.group_key,
            "created": self.created,
            "reason": self.reason,
            "failed_at": self.failed_at,
        }


_COLUMNS = "seq, generation, uid, request, attempts, group_key, created, reason, failed_at"


# A batch goes to SQLite as ONE statement, whatever its size and kinds of
# change: a multi-row INSERT into the view below, whose triggers apply each
# row as a clear, a delete of a run of consecutive seqs, a put or an attempt
# update, in row order. Run outside a transaction, that statement commits
# itself. Every statement is a step that releases the GIL and must win it back
# from the busy event loop: a commit of BEGIN, one statement per kind of
# change and COMMIT waited for the loop five times; this one waits once, and
# binds plain values (no JSON to parse).
_OP_CLEAR, _OP_DELETE, _OP_PUT, _OP_ATTEMPTS = 0, 1, 2, 3
_CHANGE_COLUMNS = ("op", "last_seq", *_COLUMNS.split(", "))
CHANGES_SCHEMA = f"""
CREATE TEMP VIEW IF NOT EXISTS changes AS
    SELECT 0 AS op, 0 AS last_seq, {_COLUMNS} FROM main.entries WHERE 0;
CREATE TEMP TRIGGER IF NOT EXISTS changes_clear INSTEAD OF INSERT ON changes
WHEN NEW.op = {_OP_CLEAR} BEGIN DELETE FROM entries; END;
CREATE TEMP TRIGGER IF NOT EXISTS changes_delete INSTEAD OF INSERT ON changes
WHEN NEW.op = {_OP_DELETE} BEGIN
    DELETE FROM entries WHERE seq BETWEEN NEW.seq AND NEW.last_seq;
END;
CREATE TEMP TRIGGER IF NOT EXISTS changes_put INSTEAD OF INSERT ON changes
WHEN NEW.op = {_OP_PUT} BEGIN
    INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES ({", ".join(
        "NEW." + name for name in _COLUMNS.split(", "))});
END;
CREATE TEMP TRIGGER IF NOT EXISTS changes_attempts INSTEAD OF INSERT ON changes
WHEN NEW.op = {_OP_ATTEMPTS} BEGIN
    UPDATE entries SET attempts = NEW.attempts WHERE seq = NEW.seq;
END;
"""


# Every row of a statement has the same shape, so a statement's text depends
# only on its row count and on which of two shapes it uses: a handful of
# prepared statements serve batches of every size and mix (preparing a new one
# costs about as much as a commit). Values a row's trigger does not read are
# bound as integer zeros, and the columns no row of the statement sets are
# literal NULLs: every NULL or bytes parameter costs the sqlite3 module an
# adapter lookup (a tuple, a dict probe, two attribute probes) while holding
# the GIL the event loop waits for, where ints, floats and strs bind directly.
_OPTIONAL_COLUMNS = ("group_key", "reason", "failed_at")
# Batches whose puts are all pending entries without a group key (the common case).
_PLAIN_ROW = "(" + ",".join("NULL" if name in _OPTIONAL_COLUMNS else "?"
                            for name in _CHANGE_COLUMNS) + ")"
# Batches with a put that has a group key, a failure reason or a failure time.
_FULL_ROW = "(" + ",".join("?" for _ in _CHANGE_COLUMNS) + ")"
_PLAIN_WIDTH = _PLAIN_ROW.count("?")
_FULL_WIDTH = len(_CHANGE_COLUMNS)
# Both shapes start with op, last_seq, seq, generation, uid, request, attempts;
# a change that is not a put binds zeros for the rest of its row.
_HEAD_WIDTH = _CHANGE_COLUMNS.index("group_key")
_ZERO_TAIL = {full: (0,) * (width - _HEAD_WIDTH)
              for full, width in ((False, _PLAIN_WIDTH), (True, _FULL_WIDTH))}
# A row no trigger acts on (op -1), padding a statement to one of a few sizes.
_NO_CHANGE = {full: [-1] + [0] * (width - 1)
              for full, width in ((False, _PLAIN_WIDTH), (True, _FULL_WIDTH))}
# SQLite allows 32,766 parameters per statement; bigger batches take several
# statements inside one explicit transaction.
MAX_CHANGES_PER_STATEMENT = 2048
# The most commits one job makes back to back before it queues itself again
# behind whatever else waits for the queue's thread (a read, the close).
COMMITS_PER_JOB = 8
# After a failed commit, the changes nobody was told about are tried again this
# many seconds later at the soonest (or after commit_interval, if longer): a
# failing disk gets a retry and an error line per second, not per commit_interval.
FAILED_COMMIT_RETRY = 1.0
# While close() waits for a commit (a hung or very slow disk at shutdown), it
# says so this often: otherwise a stop that never ends gives no reason.
SLOW_CLOSE_WARNING = 5.0
# How long opening waits for another writer before skipping the write-permission probe,
# and how long commits wait for one (sqlite3's default).
WRITE_PROBE_WAIT_MS = 100
BUSY_TIMEOUT_MS = 5000


def _statement_size(count: int) -> int:
    """The padded row count of a statement carrying *count* changes."""
    if count <= 16:
        return count
    if count <= 256:
        return -(-count // 16) * 16
    return min(1 << (count - 1).bit_length(), MAX_CHANGES_PER_STATEMENT)


@functools.lru_cache(maxsize=128)
def _changes_sql(size: int, full: bool) -> str:
    """The INSERT of *size* rows of one shape (see _PLAIN_ROW and _FULL_ROW)."""
    return "INSERT INTO changes VALUES " + ",".join([_FULL_ROW if full else _PLAIN_ROW] * size)


def _change_params(batch: _Batch, full: bool) -> list[Any]:
    """The batch's changes in the order they apply, as one flat parameter list of rows.

    Columns: op, last_seq, seq, generation, uid, request, attempts, then (in
    *full* rows only) group_key, then created, then (full only) reason and
    failed_at.
    """
    params: list[Any] = []
    tail = _ZERO_TAIL[full]
    if batch.clear:
        params += (_OP_CLEAR, 0, 0, 0, 0, 0, 0, *tail)
    for first, last in _runs(batch.deletes):
        params += (_OP_DELETE, last, first, 0, 0, 0, 0, *tail)
    if full:
        for row in batch.rows.values():
            params += _full_row(row)
    else:
        for row in batch.rows.values():
            params += row
    for seq, attempts in batch.attempts.items():
        params += (_OP_ATTEMPTS, 0, seq, 0, 0, 0, attempts, *tail)
    return params


def _execute_changes(db: sqlite3.Connection, params: list[Any], full: bool) -> None:
    """Run one statement for at most MAX_CHANGES_PER_STATEMENT rows of *params*."""
    width = _FULL_WIDTH if full else _PLAIN_WIDTH
    count = len(params) // width
    size = _statement_size(count)
    if size > count:
        params = params + _NO_CHANGE[full] * (size - count)
    db.execute(_changes_sql(size, full), params)


def _runs(seqs: set[int]) -> list[list[int]]:
    """*seqs* as [first, last] runs of consecutive numbers, in order.

    Workers finish entries mostly in arrival order, so a commit's deletes are
    a run or two: one range delete each instead of one lookup per entry.
    """
    if not seqs:
        return []
    first, last = min(seqs), max(seqs)
    if last - first + 1 == len(seqs):
        return [[first, last]]  # the common case, without sorting
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _row(entry: Entry) -> tuple[Any, ...]:
    """The parameters of the row that puts *entry*: the plain shape unless it needs the full one.

    Built when the entry is stored, on the loop, so that the commit thread,
    which holds the GIL between a commit and the next, only copies them.
    """
    if entry.group_key is None and entry.reason is None and entry.failed_at is None:
        return (_OP_PUT, 0, entry.seq, entry.generation, entry.uid, entry.request, entry.attempts,
                entry.created)
    return (_OP_PUT, 0, entry.seq, entry.generation, entry.uid, entry.request, entry.attempts,
            entry.group_key, entry.created, entry.reason, entry.failed_at)


def _full_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of :func:`_row` in the full shape (a plain one gets NULL optional columns)."""
    if len(row) == _FULL_WIDTH:
        return row
    # The plain shape leaves out group_key, reason and failed_at.
    return (*row[:_HEAD_WIDTH], None, row[_HEAD_WIDTH], None, None)


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(seq=row[0], generation=row[1], uid=row[2], request=bytes(row[3]), attempts=row[4],
                 group_key=row[5], created=row[6], reason=row[7], failed_at=row[8])


class _Batch:
    """The net effect of the changes made since the last commit, per sequence number.

    Keeping final states instead of a log turns any number of changes into
    one statement, and an entry inserted and removed before its commit
    costs no disk write at all.
    """

    __slots__ = ("clear", "rows", "deletes", "attempts", "inserts", "waited", "waited_deletes",
                 "done", "listeners")

    def __init__(self) -> None:
        self.clear = False
        self.rows: dict[int, tuple[Any, ...]] = {}  # seq: the parameters of its put row (_row)
        self.deletes: set[int] = set()
        self.attempts: dict[int, int] = {}
        self.inserts = 0
        # Sequence numbers inserted by callers that wait for this commit: if it
        # fails they are told, and the rows are not written later behind their back.
        self.waited: set[int] = set()
        self.waited_deletes: set[int] = set()  # likewise for deletes (delete(durable=True))
        self.done: asyncio.Future[None] | None = None
        # Called in order with None (committed) or the error once the batch is
        # settled: one plain call each, where a callback on the shared future
        # would cost every waiter a scheduled handle.
        self.listeners: list[CommitListener] = []

    def __bool__(self) -> bool:
        return bool(self.clear or self.rows or self.deletes or self.attempts)

    def waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future shared by everyone waiting for this batch's commit."""
        if self.done is None:
            self.done = loop.create_future()
        return self.done


class DurableQueue:
    """The rows of one queue file, with batched, off-loop writes.

    ``max_uncommitted`` is how many inserts may be acknowledged before they
    are committed (0: every insert waits for its commit); ``commit_interval``
    bounds how long any change stays uncommitted.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_uncommitted: int = 0,
        commit_interval: float = 0.05,
        synchronous: Synchronous = "FULL",
        index_uid: bool = False,
    ) -> None:
        if max_uncommitted < 0:
            raise ValueError("max_uncommitted must be >= 0")
        self.path = path
        self.index_uid = index_uid
        self.max_uncommitted = max_uncommitted
        self.commit_interval = commit_interval
        self.synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ecosys-db-{path.stem}")
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Guards the batch being filled: the loop writes to it, the thread takes it.
        self._lock = threading.Lock()
        self._batch = _Batch()
        self._taken: deque[_Batch] = deque()  # taken by the thread, not yet settled on the loop
        self._committer_running = False  # a commit job runs on the thread or waits for it
        self._uncommitted_inserts = 0
        self._waiting_inserts = 0  # inserts whose callers wait for a commit not yet settled
        self._due = False  # commit_interval passed with changes waiting
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.commits = 0

    # ----- thread side -----------------------------------------------------

    def _open_sync(self) -> list[Entry]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Kept at once, so that a failing open is closed like any other (_close_sync).
        db = self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.executescript(SCHEMA)
        db.executescript(CHANGES_SCHEMA)
        if self.index_uid:
            db.execute(UID_INDEX)
        entries = [_entry(r) for r in db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq")]
        # A file SQLite can only read (no write permission) opens and reads fine;
        # every commit would fail later, each request answered 600. Find out now.
        # Briefly: another process writing the file (an operator's sqlite3 shell)
        # holds the lock, which says nothing about our permissions.
        db.execute(f"PRAGMA busy_timeout={WRITE_PROBE_WAIT_MS}")
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM entries WHERE 0")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            log.warning("queue %s: another process is writing the file; commits wait for it",
                        self.path.name)
        finally:
            db.execute("ROLLBACK")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return entries

    def _apply_sync(self, batch: _Batch) -> None:
        db = self._db
        assert db is not None
        full = any(len(row) == _FULL_WIDTH for row in batch.rows.values())
        params = _change_params(batch, full)
        step = MAX_CHANGES_PER_STATEMENT * (_FULL_WIDTH if full else _PLAIN_WIDTH)
        if len(params) <= step:
            # Outside a transaction: the statement is its own, all or nothing.
            _execute_changes(db, params, full)
            return
        db.execute("BEGIN")
        try:
            for start in range(0, len(params), step):
                _execute_changes(db, params[start:start + step], full)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _commit_due_batches(self) -> None:
        """Thread: commit batches back to back while one is due, then stop.

        Taking the next batch here, the moment the previous commit returns,
        keeps the disk busy: a round trip through the event loop between two
        commits would leave it idle while the loop serves other callbacks.
        """
        loop = self._loop
        assert loop is not None
        try:
            for _ in range(COMMITS_PER_JOB):
                with self._lock:
                    batch = self._batch
                    if not self._commit_due(batch):
                        self._committer_running = False
                        if batch:
                            # Changes nobody waits for: committed by the interval timer.
                            loop.call_soon_threadsafe(self._arm_timer)
                        return
                    self._batch = _Batch()
                    self._due = False
                    self._taken.append(batch)
                error: BaseException | None = None
                if batch:
                    try:
                        self._apply_sync(batch)
                    except Exception as exc:
                        error = exc
                loop.call_soon_threadsafe(self._settle, batch, error)
            # Let a read or the close queued on this thread run between commits.
            self._executor.submit(self._commit_due_batches)
        except BaseException:
            with self._lock:
                self._committer_running = False
            log.exception("queue %s: the commit thread failed", self.path.name)
            raise

    def _commit_due(self, batch: _Batch) -> bool:
        # Called with the lock held.
        if batch.done is not None:
            return True
        # Without inserts, a batch holds deletes and attempt counts nobody waits
        # for: the interval timer commits them. Committing them the moment the
        # previous commit returns (its inserts are counted as uncommitted until
        # settled) kept the disk busy for nobody, and the next requests waited
        # behind it.
        return bool(batch) and (
            self._due or bool(batch.inserts) and self._uncommitted_inserts >= max(1, self.max_uncommitted)
        )

    # ----- loop side ---------------------------------------------------------

    async def open(self) -> list[Entry]:
        """Open (creating if needed) the file and return its entries in order.

        Raises QueueFileError naming the file if it cannot be used (not SQLite,
        corrupt, not a queue file, not writable, the disk full).
        """
        self._loop = asyncio.get_running_loop()
        try:
            return await self._loop.run_in_executor(self._executor, self._open_sync)
        except sqlite3.Error as exc:
            await self._release()
            raise QueueFileError(f"queue file {self.path}: {exc}") from None

    async def insert(self, entries: list[Entry], *, durable: bool | None = None) -> None:
        """Store *entries*; waits for their commit if *durable* (default: by max_uncommitted)."""
        committed = self.insert_nowait(entries, durable=durable)
        if committed is not None:
            # Shielded: the future is shared by the whole batch, and a cancelled
            # caller must not cancel it for every other caller waiting on it.
            await asyncio.shield(committed)

    def insert_nowait(
        self, entries: list[Entry], *, durable: bool | None = None,
        on_commit: CommitListener | None = None,
    ) -> asyncio.Future[None] | None:
        """Store *entries*; return the future of the commit to wait for, or None if none is due.

        When a commit is due, *on_commit* (if given) is called with None once it
        is done, or with the exception if it failed, before the future settles.
        """
        with self._lock:
            batch = self._writable()
            batch.inserts += len(entries)
            self._uncommitted_inserts += len(entries)
            # While an earlier insert waits for its commit, later ones wait too:
            # acknowledged at once, a later entry would reach its worker (or its
            # sequenced lane) before the earlier one, out of order.
            must_wait = durable if durable is not None else (
                self.max_uncommitted == 0 or self._waiting_inserts > 0
                or self._uncommitted_inserts > self.max_uncommitted
            )
            for entry in entries:
                batch.rows[entry.seq] = _row(entry)
                batch.deletes.discard(entry.seq)
                batch.attempts.pop(entry.seq, None)
                if must_wait:
                    batch.waited.add(entry.seq)
            if must_wait:
                self._waiting_inserts += len(entries)
            committed = self._changed_nowait(wait=must_wait)
            if committed is not None and on_commit is not None:
                batch.listeners.append(on_commit)
            return committed

    def delete_nowait(self, seqs: list[int], *, waited: bool = False) -> asyncio.Future[None] | None:
        """Remove the entries with these sequence numbers (committed with a later batch).

        *waited*: return the future of the commit that holds them, for a caller
        that waits and so hears if it fails (a failed commit then does not retry
        these deletes behind its back); otherwise None.
        """
        with self._lock:
            batch = self._writable()
            for seq in seqs:
                batch.rows.pop(seq, None)
                batch.attempts.pop(seq, None)
                batch.deletes.add(seq)
                if waited:
                    batch.waited_deletes.add(seq)
                else:
                    batch.waited_deletes.discard(seq)
            # Taken under the same lock: the commit that holds these very deletes.
            return self._changed_nowait(wait=waited)

    async def delete(self, seqs: list[int], *, durable: bool = False) -> None:
        """Remove the entries with these sequence numbers; waits for the commit if *durable*."""
        committed = self.delete_nowait(seqs, waited=durable)
        if committed is not None:
            await asyncio.shield(committed)

    def set_attempts_nowait(self, entry: Entry) -> None:
        """Record the attempt count of *entry* (committed with the next batch)."""
        with self._lock:
            batch = self._writable()
            if entry.seq in batch.rows:
                batch.rows[entry.seq] = _row(entry)
            else:
                batch.attempts[entry.seq] = entry.attempts
            self._changed_nowait(wait=False)

    async def clear(self) -> None:
        """Remove every entry, durably."""
        with self._lock:
            batch = self._writable()
            batch.clear = True
            batch.rows.clear()
            batch.deletes.clear()
            batch.attempts.clear()
            committed = self._changed_nowait(wait=True)
        assert committed is not None  # wait=True always returns the commit's future
        await asyncio.shield(committed)

    def _writable(self) -> _Batch:
        if self._closed:
            raise RuntimeError(f"queue {self.path.name} is closed")
        return self._batch

    def _changed_nowait(self, *, wait: bool) -> asyncio.Future[None] | None:
        # Called with the lock held.
        loop = self._loop
        assert loop is not None, "the queue is not open"
        if wait:
            done = self._batch.waiter(loop)
            self._start_committing()
            return done
        if self.max_uncommitted and self._batch.inserts \
                and self._uncommitted_inserts >= self.max_uncommitted:
            self._start_committing()
        elif self._timer is None and not self._committer_running:
            self._timer = loop.call_later(self.commit_interval, self._interval_elapsed)
        return None

    def _interval_elapsed(self) -> None:
        self._timer = None
        with self._lock:
            self._due = True
            self._start_committing()

    def _arm_timer(self, delay: float | None = None) -> None:
        with self._lock:
            if self._batch and self._timer is None and not self._committer_running \
                    and not self._closed and self._loop is not None:
                # Changes nobody waits for go out with the next commit, or at the latest
                # after commit_interval; committing them at once would defeat batching.
                self._timer = self._loop.call_later(
                    self.commit_interval if delay is None else delay, self._interval_elapsed)

    def _start_committing(self) -> None:
        # Called with the lock held: the thread decides to stop under the same lock.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._committer_running:
            self._committer_running = True
            self._executor.submit(self._commit_due_batches)

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        """Loop: the thread finished *batch*; tell its listeners and waiters."""
        with self._lock:
            self._taken.popleft()
            # Counted until committed (or failed): the loss bound covers batches in flight.
            self._uncommitted_inserts -= batch.inserts
            self._waiting_inserts -= len(batch.waited)
            requeued = error is not None and self._requeue(batch)
        if error is None:
            if batch:
                self.commits += 1
        else:
            log.error("queue %s: commit failed: %s", self.path.name, error)
            if requeued:
                self._arm_timer(max(self.commit_interval, FAILED_COMMIT_RETRY))
        _notify(batch, error)
        done = batch.done
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
                # Logged above and told to the listeners; a commit that only
                # listeners wait for must not also warn "never retrieved".
                done.exception()

    def _requeue(self, failed: _Batch) -> bool:
        """Put a failed batch's changes that nobody was told about back for the next commit.

        Deletes, attempt counts and inserts acknowledged before their commit
        (max_uncommitted) would otherwise be lost while memory still holds
        them: an acknowledged request missing from disk, a handled one run
        again after a restart. Inserts whose callers heard of the failure and
        a clear (its caller heard too) are not retried; a change to an entry
        that a later batch changes again is superseded by it. Called with the
        lock held.
        """
        if self._closed:
            return False
        newer = [*self._taken, self._batch]
        if any(batch.clear for batch in newer):
            return False
        touched: set[int] = set()
        for batch in newer:
            touched.update(batch.rows, batch.deletes, batch.attempts)
        current = self._batch
        for seq in failed.deletes:
            if seq not in touched and seq not in failed.waited_deletes:
                current.deletes.add(seq)
        for seq, row in failed.rows.items():
            if seq not in touched and seq not in failed.waited:
                current.rows[seq] = row
                current.inserts += 1
                self._uncommitted_inserts += 1
        for seq, attempts in failed.attempts.items():
            if seq not in touched:
                current.attempts[seq] = attempts
        return bool(current)

    async def flush(self) -> None:
        """Commit everything written so far."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._batch:
                done = self._batch.waiter(loop)
                self._start_committing()
            elif self._taken:
                # Committed on the thread, or about to be; settled on the loop soon.
                done = self._taken[-1].waiter(loop)
            else:
                return
        await asyncio.shield(done)

    async def read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read-only *query* on the queue's thread (after pending writes commit)."""
        await self.flush()
        db = self._db
        assert db is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, query, db)

    async def close(self) -> None:
        """Commit what is left and close the file."""
        if self._closed:
            return
        try:
            # A failing last commit is logged by _settle and raised to the caller,
            # but the file and the thread are released all the same.
            try:
                await self._flush_saying_why_it_waits()
            except Exception:
                # The changes nobody was told about went back into the batch: one more try.
                await self._flush_saying_why_it_waits()
        except Exception as exc:
            lost = self._batch.inserts
            if lost:
                log.error("queue %s: %d acknowledged request(s) could not be written and are lost: %s",
                          self.path.name, lost, exc)
            raise
        finally:
            await self._release()

    async def _flush_saying_why_it_waits(self) -> None:
        """flush(), with a warning every SLOW_CLOSE_WARNING seconds it keeps the close waiting."""
        flushing = asyncio.ensure_future(self.flush())
        waited = 0.0
        try:
            while True:
                done, _ = await asyncio.wait({flushing}, timeout=SLOW_CLOSE_WARNING)
                if done:
                    flushing.result()  # raises what the flush raised
                    return
                waited += SLOW_CLOSE_WARNING
                log.warning("queue %s: closing has waited %gs for the disk to finish a commit; "
                            "it goes on waiting, so that nothing acknowledged is lost",
                            self.path.name, waited)
        finally:
            flushing.cancel()  # only if close() itself was cancelled: the commit goes on regardless

    async def _release(self) -> None:
        """Mark the queue closed, then close the file and end its thread."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)


def _notify(batch: _Batch, error: BaseException | None) -> None:
    for listener in batch.listeners:
        try:
            listener(error)
        except Exception:
            # One broken listener must not keep the others from hearing about the commit.
            log.exception("a commit listener failed")
    batch.listeners.clear()


def select_entries(where: str = "", params: Sequence[Any] = (), limit: int | None = None
                   ) -> Callable[[sqlite3.Connection], list[Entry]]:
    """A read query for :meth:`DurableQueue.read` returning entries in order."""
    sql = f"SELECT {_COLUMNS} FROM entries {where} ORDER BY seq"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"

    def run(db: sqlite3.Connection) -> list[Entry]:
        return [_entry(r) for r in db.execute(sql, params)]

    return run
