"""``@queued_sender``: store a message durably, return at once, deliver it in the background."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from ..errors import (
    ClientClosed,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    EcosysError,
    RequestTimeout,
    TransportError,
)
from ..protocol import Status, new_uid
from ..routing import Registry, default_registry
from ..sending import wrap_builder
from ..telemetry.error_states import error_states
from ..tracking import current_uid
from ..transport.client import Client, encode_data
from .backoff import Backoff, exponential
from .base import QueueStorage
from .store import Entry, Synchronous

log = logging.getLogger("ecosys.queues")

RETRYABLE_STATUSES = frozenset({Status.APPLICATION_BUSY})
# ClientClosed: the application closed the client under a delivery; it reopens on use.
RETRYABLE_ERRORS = (ConnectFailed, ConnectionLost, RequestTimeout, ClientClosed)
# How long a delivery waits after the queue files refused a write before trying again.
STORE_FAILURE_DELAY = 5.0


class SenderNotOpen(EcosysError):
    """A queued sender was called before its application started (or after it stopped)."""


class QueuedSender(QueueStorage):
    """Durable outgoing queue to one route key on one client.

    Retryable failures (connection refused or lost, timeout, status 500) are
    retried after ``backoff(attempt)`` seconds, forever unless
    ``max_retries`` is set; any other error status goes to the error queue at
    once. A *sequenced* sender delivers the messages of a group strictly in
    order, one at a time; a group whose head lands in the error queue waits
    until it is reprocessed or removed, unless ``skip_failed=True``.
    """

    kind = "sender"

    def __init__(
        self,
        client: Client,
        route_key: str,
        *,
        name: str | None = None,
        max_retries: int | None = None,
        backoff: Backoff | None = None,
        sequenced: bool = False,
        group_key: Callable[[Any], Any] | None = None,
        skip_failed: bool = False,
        concurrency: int = 16,
        max_uncommitted: int = 0,
        commit_interval: float = 0.05,
        synchronous: Synchronous = "FULL",
    ) -> None:
        if group_key is not None and not sequenced:
            raise ConfigurationError("group_key needs sequenced=True")
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0 (or None to retry for ever)")
        self.client = client
        self.route_key = route_key
        self.name = name or route_key
        self.max_retries = max_retries
        self.backoff = backoff or exponential()
        self.sequenced = sequenced
        self.group_key = group_key
        self.skip_failed = skip_failed
        self.concurrency = concurrency
        self._init_storage(self.name, max_uncommitted=max_uncommitted,
                           commit_interval=commit_interval, synchronous=synchronous)
        self.sending = True
        self.delivered = 0
        # Entries ready to go, by group (None is the single lane of an unsequenced sender).
        self._lanes: dict[str | None, list[tuple[int, Entry]]] = {}
        self._busy: set[str] = set()  # sequenced groups whose head is in flight or waiting to retry
        self._blocked: dict[str, int] = {}  # sequenced group -> seq of its head in the error queue
        self._in_flight: set[asyncio.Task[None]] = set()
        self._backing_off: set[asyncio.Task[Any]] = set()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def unreachable_state(self) -> str:
        """The error state raised while the target cannot be reached."""
        return f"queued_sender.{self.name}.unreachable"

    # ----- lifecycle -----------------------------------------------------

    async def open(self, queue_dir: Path, prefix: str) -> None:
        """Open the files and start delivering what an earlier run left."""
        entries = await self._open_storage(queue_dir, prefix)
        pair = self.require_pair()
        self._lanes, self._busy, self._blocked = {}, set(), {}
        if self.sequenced and not self.skip_failed:
            for failed in await pair.error_entries():
                if failed.group_key is not None:
                    seq = self._blocked.get(failed.group_key)
                    self._blocked[failed.group_key] = failed.seq if seq is None else min(seq, failed.seq)
        for entry in entries:
            self._lane_push(entry)
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"sender {self.name}")
        if entries:
            log.info("sender %s: resuming %d pending message(s)", self.name, len(entries))

    async def close(self, grace: float = 10.0) -> None:
        """Stop sending (deliveries in flight get *grace* seconds) and close the files."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.gather(worker, return_exceptions=True)
        # Deliveries only waiting out a back-off have nothing to finish: stop them now
        # (their messages stay pending on disk).
        for task in list(self._backing_off):
            task.cancel()
        if self._in_flight:
            _, pending = await asyncio.wait(list(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._close_storage()

    # ----- storing -------------------------------------------------------

    async def enqueue(self, message: Any, *, uid: str | None = None) -> str:
        """Store *message* for delivery and return its uid (the uid the target will see)."""
        pair = self.pair
        if pair is None or self._stopping:
            raise SenderNotOpen(f"queued sender {self.name!r} is not open; start the Application first")
        if uid is None:
            uid = current_uid.get() or new_uid()
        group = None
        if self.sequenced:
            group = "" if self.group_key is None else str(self.group_key(message))
        entry: Entry | None = None
        waiter: asyncio.Future[None] | None = None

        def stored(error: BaseException | None) -> None:
            # Called in commit order, so messages join their lanes in the order
            # they were stored; and a caller cancelled while it waited does not
            # leave its stored message undelivered.
            assert entry is not None
            if error is None:
                self._lane_push(entry)
            else:
                pair.forget(entry)
            if waiter is not None and not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

        entry, committed = pair.push_nowait(uid, encode_data(message), group, on_commit=stored)
        if committed is None:
            self._lane_push(entry)
            return uid
        # A future of its own, not the commit's (shared by the whole batch: a
        # cancelled caller would cancel it for everyone); cheaper than a shield.
        waiter = committed.get_loop().create_future()
        await waiter
        return uid

    def _lane_push(self, entry: Entry) -> None:
        if self.sequenced and entry.group_key is None:
            # Stored by this sender before it was sequenced: one lane for all of them.
            entry.group_key = ""
        lane = entry.group_key if self.sequenced else None
        heapq.heappush(self._lanes.setdefault(lane, []), (entry.seq, entry))
        if self._wakeup is not None:
            self._wakeup.set()

    # ----- delivering ----------------------------------------------------

    def _next_entries(self) -> list[Entry]:
        chosen: list[Entry] = []
        room = self.concurrency - len(self._in_flight)
        if not self.sequenced:
            lane = self._lanes.get(None, [])
            while lane and room > 0:
                chosen.append(heapq.heappop(lane)[1])
                room -= 1
            return chosen
        for group, lane in list(self._lanes.items()):
            if room <= 0:
                break
            if not lane:
                del self._lanes[group]
                continue
            assert group is not None
            if group in self._busy or group in self._blocked:
                continue
            chosen.append(heapq.heappop(lane)[1])
            self._busy.add(group)
            room -= 1
        return chosen

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while not self._stopping:
            self._wakeup.clear()
            if self.sending:
                for entry in self._next_entries():
                    task = loop.create_task(self._deliver(entry))
                    self._in_flight.add(task)
                    task.add_done_callback(self._delivery_done)
            await self._wakeup.wait()

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sender %s: delivery task failed", self.name, exc_info=task.exception())
        if self._wakeup is not None:
            self._wakeup.set()

    async def _deliver(self, entry: Entry) -> None:
        try:
            await self._attempt(entry)
        except Exception:
            # The store failed (disk full, I/O error): the message is still pending on
            # disk. Put it back (its group stays busy meanwhile) and try again later.
            log.exception("sender %s: storing the outcome of %s failed; retrying in %.0fs",
                          self.name, entry.uid, STORE_FAILURE_DELAY)
            await asyncio.sleep(STORE_FAILURE_DELAY)
            if not self._stopping:
                if self.sequenced:
                    self._busy.discard(entry.group_key or "")
                self._lane_push(entry)

    async def _attempt(self, entry: Entry) -> None:
        pair = self.pair
        assert pair is not None
        entry.attempts += 1
        token = current_uid.set(entry.uid)
        try:
            try:
                response = await self.client.send(self.route_key, orjson.Fragment(entry.request),
                                                  uid=entry.uid)
            except RETRYABLE_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
                error_states.raise_state(
                    self.unreachable_state,
                    f"cannot deliver to {self.route_key} at {self.client.url}: {reason}",
                )
                await self._retry_or_fail(entry, reason)
                return
            except TransportError as exc:
                # Not a reachability problem (e.g. the message is too large, or the
                # peer talks garbage): sending it again would fail the same way.
                await self._fail(entry, f"{type(exc).__name__}: {exc}")
                return
            if error_states.is_raised(self.unreachable_state):
                error_states.clear(self.unreachable_state)
            if response.status == Status.SUCCESS:
                pair.done(entry)
                self.delivered += 1
                self._release(entry)
                return
            message = response.data.get("message") if isinstance(response.data, dict) else response.data
            reason = f"status {response.status}: {message}"
            if response.status in RETRYABLE_STATUSES:
                await self._retry_or_fail(entry, reason)
            else:
                await self._fail(entry, reason)
        finally:
            current_uid.reset(token)

    async def _retry_or_fail(self, entry: Entry, reason: str) -> None:
        if self.max_retries is not None and entry.attempts > self.max_retries:
            await self._fail(entry, f"{reason} (gave up after {entry.attempts} attempts)")
            return
        assert self.pair is not None
        self.pair.count_attempt(entry)
        delay = self.backoff(entry.attempts)
        # A dead target fails every message many times: say it at the start, then rarely.
        level = logging.INFO if entry.attempts == 1 or entry.attempts % 10 == 0 else logging.DEBUG
        log.log(level, "sender %s: attempt %d failed (%s); retrying in %.2fs", self.name,
                entry.attempts, reason, delay)
        task = asyncio.current_task()
        assert task is not None
        self._backing_off.add(task)
        try:
            await asyncio.sleep(delay)
        finally:
            self._backing_off.discard(task)
        if self._stopping:
            return
        if self.sequenced:
            self._busy.discard(entry.group_key or "")
        self._lane_push(entry)

    async def _fail(self, entry: Entry, reason: str) -> None:
        assert self.pair is not None
        log.warning("sender %s: message %s moved to the error queue: %s", self.name, entry.uid, reason)
        block = self.sequenced and not self.skip_failed and entry.group_key is not None \
            and entry.group_key not in self._blocked
        if block:
            # Blocked before the move, so a clear of the error queue that runs
            # meanwhile finds the block and lifts it with the entry it removed.
            assert entry.group_key is not None
            self._blocked[entry.group_key] = entry.seq
        try:
            await self.pair.fail(entry, reason)
        except BaseException:
            if block and self._blocked.get(entry.group_key or "") == entry.seq:
                del self._blocked[entry.group_key or ""]
            raise
        if not self.pair.pending_count:
            # Nothing left to deliver, so nothing will show the target is back:
            # an "unreachable" state would otherwise stay raised for ever.
            error_states.clear(self.unreachable_state)
        self._release(entry)

    def _release(self, entry: Entry) -> None:
        if self.sequenced and entry.group_key is not None:
            self._busy.discard(entry.group_key)
        if self._wakeup is not None:
            self._wakeup.set()

    # ----- management ----------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the send process (messages are still stored while paused)."""
        self.sending = not paused
        if self._wakeup is not None:
            self._wakeup.set()

    def data(self) -> dict[str, Any]:
        """State and sizes for the management endpoints and statistics."""
        pair = self.pair
        return {
            "queue_route_key": self.name,
            "target": f"{self.route_key} @ {self.client.url}",
            "sending": self.sending,
            "sequenced": self.sequenced,
            "pending": pair.pending_count if pair else 0,
            "errors": pair.error_count if pair else 0,
            "in_flight": len(self._in_flight),
            "blocked_groups": sorted(self._blocked),
            "delivered": self.delivered,
        }

    async def reprocess(self, entries: list[Entry]) -> int:
        """Move error entries back to pending (in their original order) and unblock their groups."""
        moved = await self.require_pair().reprocess(entries)
        for entry in moved:
            if entry.group_key is not None and self._blocked.get(entry.group_key) == entry.seq:
                del self._blocked[entry.group_key]
            self._lane_push(entry)
        return len(moved)

    def forget_errors(self, entries: list[Entry]) -> None:
        """Unblock groups whose failed head was removed from the error queue."""
        for entry in entries:
            if entry.group_key is not None and self._blocked.get(entry.group_key) == entry.seq:
                del self._blocked[entry.group_key]
        if self._wakeup is not None:
            self._wakeup.set()

    async def unblock_removed(self) -> None:
        """Unblock every group whose failed head is no longer in the error queue (after a clear)."""
        if not self._blocked:
            return
        # Only blocks that existed before the read: their failed heads were
        # committed (or dropped by the clear) before it. A head failing while
        # the read runs may not be in the file yet, and must stay blocked.
        before = dict(self._blocked)
        remaining = await self.require_pair().error_seqs()
        for group, seq in before.items():
            if seq not in remaining and self._blocked.get(group) == seq:
                del self._blocked[group]
        if self._wakeup is not None:
            self._wakeup.set()


def queued_sender(
    client: Client,
    route_key: str,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[str]]]:
    """Decorate a function that builds a message; calling it stores the message and returns its uid.

    Options are those of :class:`QueuedSender` (max_retries, backoff,
    sequenced, group_key, skip_failed, concurrency, max_uncommitted, ...).
    """
    sender = QueuedSender(client, route_key, name=name, **options)
    (registry if registry is not None else default_registry).add_sender(sender)

    def decorate(build: Callable[..., Any]) -> Callable[..., Awaitable[str]]:
        store = wrap_builder(build, sender.enqueue)
        store.queued_sender = sender  # type: ignore[attr-defined]
        return store

    return decorate
