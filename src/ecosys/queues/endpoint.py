"""``@queued_endpoint``: store the request durably, acknowledge, process it later in the background."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson

from ..errors import ConfigurationError, Reject
from ..protocol import Status, value_json
from ..routing import (
    HANDLER_FAILURES,
    Endpoint,
    Handler,
    PreparedCall,
    Registry,
    cancellation_mark,
    default_registry,
    is_stop,
)
from ..telemetry.stats import stats
from ..tracking import current_uid
from .base import QueueStorage
from .ready import ReadyEntries
from .store import Entry, Synchronous

log = logging.getLogger("ecosys.queues")

# How long a worker waits after the queue files refused a write before trying again.
STORE_FAILURE_DELAY = 5.0
# The longest the worker runs handlers back to back before letting the loop serve others.
WORK_SLICE = 0.005

# The default of store()'s *data*: the request's data as the client sent it is
# not known (an in-process call with a validated value only).
NOT_RECEIVED: Any = object()


def stored_request(value: Any, data: Any = NOT_RECEIVED) -> bytes:
    """The JSON a queued endpoint stores for a request: its data as the client sent it, if known.

    Not the validated value serialised again: a model's serialised form need
    not validate again (a validation alias, a SecretStr written as asterisks,
    a custom serialiser), and a retry or a restart validates what is stored.
    """
    if data is not NOT_RECEIVED:
        return orjson.dumps(data)
    return b"null" if value is None else value_json(value)


class QueuedEndpoint(Endpoint, QueueStorage):
    """An endpoint whose requests go through a durable pending queue to a background worker.

    The handler returns True when the request is done and False to be called
    again later (after ``retry_delay`` seconds, at most ``max_retries`` more
    times); if it raises, or keeps returning False, the request moves to the
    error queue with the reason. Delivery is at-least-once: a request is
    removed only after its handler returned, so a crash replays it.
    """

    kind = "endpoint"
    stores_without_task = True

    def __init__(
        self,
        route_key: str,
        handler: Handler,
        *,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_uncommitted: int = 0,
        commit_interval: float = 0.05,
        synchronous: Synchronous = "FULL",
    ) -> None:
        super().__init__(route_key, handler)
        if max_retries < 0 or retry_delay < 0:
            raise ConfigurationError(
                f"queued endpoint {route_key!r}: max_retries and retry_delay must be >= 0"
            )
        self._init_storage(route_key, max_uncommitted=max_uncommitted,
                           commit_interval=commit_interval, synchronous=synchronous)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.receiving = True
        self.processing = True
        self._ready = ReadyEntries()
        self._delayed: list[tuple[float, int, Entry]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    # ----- lifecycle -----------------------------------------------------

    async def open(self, queue_dir: Path, prefix: str) -> None:
        """Open the queue files and start the worker on what an earlier run left."""
        entries = await self._open_storage(queue_dir, prefix)
        self._ready = ReadyEntries(entries)
        self._delayed = []
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"queue {self.route_key}")
        if entries:
            log.info("queue %s: resuming %d pending request(s)", self.route_key, len(entries))

    async def close(self, grace: float = 10.0) -> None:
        """Stop the worker (the running handler gets *grace* seconds) and close the files."""
        self._stopping = True
        worker, self._worker = self._worker, None
        if worker is not None:
            if self._wakeup is not None:
                self._wakeup.set()
            _, pending = await asyncio.wait([worker], timeout=grace)
            if pending:
                log.warning("queue %s: handler still running after %.1fs; it will run again at the "
                            "next start", self.route_key, grace)
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
        await self._close_storage()

    # ----- receiving -----------------------------------------------------

    async def call(self, uid: str, value: Any) -> Any:
        """Store the validated request and acknowledge it with its uid."""
        return await self.store(uid, value)

    def invoke(self, call: PreparedCall) -> Coroutine[Any, Any, Any]:
        """Store a request that came over a socket, with its data as the client sent it."""
        return self.store(call.uid, call.value, call.data)

    async def store(self, uid: str, value: Any, data: Any = NOT_RECEIVED) -> dict[str, str]:
        """Store a request (*data* as the client sent it, if known); return the acknowledgement."""
        committed = self.store_nowait(uid, value, data=data)
        if committed is not None:
            # Shielded: the commit's future is shared by every request in the batch.
            await asyncio.shield(committed)
        return {"uid": uid}

    def store_nowait(
        self, uid: str, value: Any, on_stored: Callable[[BaseException | None], None] | None = None,
        data: Any = NOT_RECEIVED,
    ) -> asyncio.Future[None] | None:
        """Store a validated request; return the commit its acknowledgement must wait for.

        None means it may be acknowledged at once (max_uncommitted allows it).
        Otherwise *on_stored* (if given) is called with None once the request is
        on disk, or with the exception if storing it failed, before the
        returned future settles. Raises Reject (status 500) while receiving is
        paused or the queue is closed.
        """
        return self._store([(uid, stored_request(value, data), None, (value,))], on_stored)

    def store_many_nowait(
        self, calls: list[PreparedCall], on_stored: Callable[[BaseException | None], None],
    ) -> asyncio.Future[None] | None:
        """Store requests read together (in order) with one insert; as :meth:`store_nowait` for each.

        Servers use this to acknowledge without a task per request. *on_stored*
        hears once for all of them. All are stored or, if this raises, none is.
        """
        return self._store([(call.uid, stored_request(call.value, call.data), None, (call.value,))
                            for call in calls], on_stored)

    def _store(
        self, items: list[tuple[str, bytes, str | None, Any]],
        on_stored: Callable[[BaseException | None], None] | None,
    ) -> asyncio.Future[None] | None:
        if not self.receiving:
            raise Reject(Status.APPLICATION_BUSY, f"receiving is paused for {self.route_key!r}")
        pair = self.pair
        if pair is None or self._stopping:
            raise Reject(Status.APPLICATION_BUSY, f"queue {self.route_key!r} is not open")
        entries: list[Entry] = []

        def stored(error: BaseException | None) -> None:
            # The worker gets the requests only once they are on disk, as the callers are told.
            if error is not None:
                for entry in entries:
                    pair.forget(entry)
            # The acknowledgements first: their write is then scheduled before the
            # worker's wake-up, so a commit's callers hear back before the
            # worker spends the loop's time on handlers.
            if on_stored is not None:
                on_stored(error)
            if error is None:
                self._make_ready(*entries)

        entries, committed = pair.push_many_nowait(items, on_commit=stored)
        if committed is None:
            self._make_ready(*entries)
        return committed

    def _make_ready(self, *entries: Entry) -> None:
        push = self._ready.push
        for entry in entries:
            push(entry)
        if self._wakeup is not None:
            self._wakeup.set()

    # ----- processing ----------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        slice_end = loop.time() + WORK_SLICE
        while not self._stopping:
            now = loop.time()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, entry = heapq.heappop(self._delayed)
                self._ready.push(entry)
            if self.processing and self._ready:
                if now >= slice_end:
                    # Handlers that never suspend would otherwise keep the loop
                    # from serving anything else until the backlog is gone.
                    await asyncio.sleep(0)
                    slice_end = loop.time() + WORK_SLICE
                    continue
                entry = self._ready.pop()
                try:
                    await self._process(entry)
                except Exception:
                    # The store failed (disk full, I/O error): the entry is still
                    # pending on disk; keep it and try again later rather than die.
                    log.exception("queue %s: storing the outcome of %s failed; retrying in %.0fs",
                                  self.route_key, entry.uid, STORE_FAILURE_DELAY)
                    due = loop.time() + STORE_FAILURE_DELAY
                    heapq.heappush(self._delayed, (due, entry.seq, entry))
                continue
            self._wakeup.clear()
            timeout = None
            if self.processing and self._delayed:
                timeout = max(0.0, self._delayed[0][0] - now)
            try:
                # Not wait_for: on 3.11 it can swallow a cancellation (see the client's heartbeat).
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            slice_end = loop.time() + WORK_SLICE

    async def _process(self, entry: Entry) -> None:
        pair = self.pair
        assert pair is not None
        if entry.attempts > self.max_retries:
            # Only an attempt that never finished leaves the count this high: the
            # process died (or was stopped) while handling it, every time. Park the
            # request rather than let it take the process down again at every start.
            await pair.fail(entry, f"all {entry.attempts} attempts used and the last one never "
                                   "finished (the process stopped while handling this request)")
            return
        entry.attempts += 1
        # Recorded before the handler runs (committed with the next batch), so an
        # attempt that kills the process still counts after the restart.
        pair.count_attempt(entry)
        token = current_uid.set(entry.uid)
        started = perf_counter()
        mark = cancellation_mark()
        try:
            try:
                # A first attempt on an entry received by this process uses the value
                # validated on arrival; retries and entries read back from disk parse
                # the stored request again (a handler may have changed its copy).
                cached, entry.value = entry.value, None
                value = cached[0] if cached else self.validate(orjson.loads(entry.request))
                result = await super().call(entry.uid, value)
            except HANDLER_FAILURES as exc:
                if is_stop(exc, mark):
                    raise  # the worker is being stopped: the entry stays pending
                log.exception("queued handler for %r raised", self.route_key)
                stats.record("queued_handlers", self.route_key, Status.PROCESSING_FAILURE,
                             perf_counter() - started)
                await pair.fail(entry, f"{type(exc).__name__}: {exc}")
                return
            stats.record("queued_handlers", self.route_key, "retry" if result is False else 0,
                         perf_counter() - started)
            if result is False:
                if entry.attempts > self.max_retries:
                    await pair.fail(entry, f"handler returned False on all {entry.attempts} attempts "
                                           f"(max_retries={self.max_retries})")
                    return
                due = asyncio.get_running_loop().time() + self.retry_delay
                heapq.heappush(self._delayed, (due, entry.seq, entry))
                return
            pair.done(entry)
        finally:
            current_uid.reset(token)

    # ----- management ----------------------------------------------------

    def set_paused(self, *, receiving: bool | None = None, processing: bool | None = None) -> None:
        """Pause (True) or resume (False) receiving and/or processing."""
        if receiving is not None:
            self.receiving = not receiving
        if processing is not None:
            self.processing = not processing
            if self._wakeup is not None:
                self._wakeup.set()

    def data(self) -> dict[str, Any]:
        """State and sizes for the management endpoints and statistics."""
        pair = self.pair
        return {
            "queue_route_key": self.route_key,
            "receiving": self.receiving,
            "processing": self.processing,
            "pending": pair.pending_count if pair else 0,
            "errors": pair.error_count if pair else 0,
            "max_retries": self.max_retries,
            "max_uncommitted": self.max_uncommitted,
        }

    async def reprocess(self, entries: list[Entry]) -> int:
        """Move error entries back to pending and hand them to the worker."""
        moved = await self.require_pair().reprocess(entries)
        for entry in moved:
            self._make_ready(entry)
        return len(moved)


def queued_endpoint(
    route_key: str,
    *,
    max_retries: int = 3,
    retry_delay: float = 1.0,
    max_uncommitted: int = 0,
    commit_interval: float = 0.05,
    synchronous: Synchronous = "FULL",
    registry: Registry | None = None,
) -> Callable[[Handler], Handler]:
    """Register a queued endpoint: requests are stored, acknowledged, then handled in the background."""

    def register(func: Handler) -> Handler:
        (registry if registry is not None else default_registry).add(
            QueuedEndpoint(route_key, func, max_retries=max_retries, retry_delay=retry_delay,
                           max_uncommitted=max_uncommitted, commit_interval=commit_interval,
                           synchronous=synchronous)
        )
        return func

    return register
