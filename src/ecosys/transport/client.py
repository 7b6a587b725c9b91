"""The client side shared by every transport, and the stream (TCP/UDS) client.

A client is safe to share between coroutines: a persistent stream client
opens one connection, writes requests as they come and matches responses to
callers by uid, so hundreds of calls can be in flight on one socket.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from time import perf_counter
from typing import Any, Generic, Protocol, TypeVar

import orjson
import pydantic
from mypy_extensions import mypyc_attr
from pydantic import BaseModel, TypeAdapter

from ..errors import (
    BadResponse,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    RequestTimeout,
    TransportError,
    response_error,
)
from ..protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEARTBEAT_REQUEST,
    LineSplitter,
    ProtocolViolation,
    Response,
    decode_response,
    encode_request_line,
    is_valid_uid,
    new_uid,
    request_line_middle,
    value_json,
)
from ..tasks import retrieve_exception
from ..telemetry.stats import stats
from ..tracking import current_uid
from .deadlines import Deadlines
from .readbuf import ReceivesIntoSharedBuffer, loop_reads_into_fresh_memory

log = logging.getLogger("ecosys.client")


def address_url(scheme: str, host: str, port: int) -> str:
    """*scheme*://host:port, with an IPv6 host in brackets as URLs require."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


# The most extra connections (UDP: sockets) a client opens for requests whose
# uid is already in flight on its shared one (see Lanes).
MAX_EXTRA_LANES = 8

# How many uids a connection remembers whose late answer missed its window (see
# ResponseMatcher.overdue); past that the oldest is forgotten, and its answer,
# should it still come, could reach a newer request with that uid sent there.
MAX_OVERDUE_UIDS = 1024

# Gathered requests are written once this many are waiting, without waiting for
# the end of the loop iteration: the server starts on the first ones while the
# client prepares the rest, instead of the two processes taking turns.
GATHER_LIMIT = 16
# ... or once they hold this many bytes: gathering saves system calls, not copies,
# and large requests are better written as they come than joined.
GATHER_BYTES = 64 * 1024

T = TypeVar("T")


class _Reroute(Exception):
    """A request not sent: its uid's late answer became overdue on that connection while it waited."""


def _not_sent() -> ConnectFailed:
    """The error of a request that never left this process: safe to retry."""
    return ConnectFailed("connection closed before the request was sent")


def encode_data(data: Any) -> bytes:
    """Serialise request data (a model, or anything JSON-able) to JSON bytes."""
    if isinstance(data, BaseModel):
        return value_json(data)
    try:
        return orjson.dumps(data)
    except TypeError:
        return value_json(data)


@mypyc_attr(allow_interpreted_subclasses=True)
class Client:
    """Timeouts, bounded retries, uid propagation and response checking for all transports.

    Only failures where the request surely did not reach the server
    (connection refused, connection closed before sending) are retried, plus
    timeouts when ``retry_on_timeout`` is set: a request that may have been
    processed is never sent twice unless you say it is safe.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        retry_delay: float = 0.1,
        retry_on_timeout: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_on_timeout = retry_on_timeout
        self._generation = 0  # counts close() calls: work begun before one must not reopen the client
        self.max_message_size = max_message_size
        # route key -> ("route @ url" for statistics, the request line's bytes
        # between the uid and the data), built once per route key.
        self._routes: dict[str, tuple[str, bytes]] = {}

    @property
    def url(self) -> str:
        """The server address as a URL."""
        raise NotImplementedError

    def send(
        self, route_key: str, data: Any = None, *, uid: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Response]:
        """Send one request; await the result for the response envelope, whatever its status."""
        return self._call(route_key, data, uid, timeout, False, None)

    def request(
        self, route_key: str, data: Any = None, *, response_model: Any = None,
        uid: str | None = None, timeout: float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Send a request; await the result for its data (parsed as *response_model* if given).

        A non-zero status raises the matching :class:`ResponseError` subclass.
        """
        return self._call(route_key, data, uid, timeout, True, response_model)

    async def _call(
        self, route_key: str, data: Any, uid: str | None, timeout: float | None,
        check: bool, response_model: Any,
    ) -> Any:
        # send() and request() hand out this one coroutine rather than awaiting
        # it inside their own: one frame less to resume on every response.
        if uid is None:
            uid = current_uid.get() or new_uid()
        elif not is_valid_uid(uid):
            raise ValueError(f"uid must be a UUID string like {new_uid()!r}, got {uid!r}")
        route = self._routes.get(route_key)
        if route is None:
            route = self._routes[route_key] = (
                f"{route_key} @ {self.url}", request_line_middle(route_key)
            )
        stat_key = route[0]
        payload = encode_request_line(uid, route[1], encode_data(data))
        if len(payload) - 1 > self.max_message_size:
            raise TransportError(
                f"request of {len(payload) - 1} bytes exceeds the maximum message size "
                f"of {self.max_message_size}"
            )
        limit = self.timeout if timeout is None else timeout
        attempt = 0
        started = perf_counter()
        generation = self._generation
        while True:
            try:
                response = await self._exchange(uid, payload, limit)
                stats.record("senders", stat_key, response.status, perf_counter() - started)
                break
            except _Reroute:
                continue  # not sent: routed again, now away from the overdue answer
            except ConnectFailed:
                if attempt >= self.retries:
                    stats.record("senders", stat_key, "transport", None)
                    raise
            except RequestTimeout:
                if not self.retry_on_timeout or attempt >= self.retries:
                    stats.record("senders", stat_key, "timeout", None)
                    raise
            except TransportError:
                stats.record("senders", stat_key, "transport", None)
                raise
            attempt += 1
            log.debug("retrying %s to %s (attempt %d)", route_key, self.url, attempt + 1)
            await asyncio.sleep(self.retry_delay * (2 ** (attempt - 1)))
            if self._generation != generation:
                # Closed since this request began: a retry would reopen the client.
                stats.record("senders", stat_key, "transport", None)
                raise ClientClosed(f"the client was closed before the request to {self.url} "
                                   "could be retried")
        if not check:
            return response
        if response.status != 0:
            raise response_error(response.status, response.data, response.uid)
        if response_model is None:
            return response.data
        try:
            if isinstance(response_model, type) and issubclass(response_model, BaseModel):
                return response_model.model_validate(response.data)
            return TypeAdapter(response_model).validate_python(response.data)
        except pydantic.ValidationError as exc:
            raise BadResponse(
                f"response to {route_key!r} does not fit {response_model!r}: {exc}"
            ) from exc

    def _exchange(self, uid: str, payload: bytes, timeout: float) -> Awaitable[Response]:
        """Send *payload* and return an awaitable of the response (one attempt)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close connections; the client reconnects if used again."""

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"


class HasMatcher(Protocol):
    """A connection or socket with its ResponseMatcher."""

    matcher: ResponseMatcher


C = TypeVar("C", bound=HasMatcher)


class Lanes(Generic[C]):
    """Extra connections (UDP: sockets) for requests whose uid is in flight on the shared one.

    Responses are matched by uid, so two requests with one uid cannot share a
    connection. Waiting for the first would hang a call chain that comes back
    to a service under one uid (A -> B -> A -> B) until the timeout, and run a
    handler's fan-out one call after another. Lanes stay open and are reused,
    at most MAX_EXTRA_LANES of them; past that a request waits its turn on the
    shared connection.
    """

    def __init__(self) -> None:
        self.open: list[C] = []
        self._opening = 0  # lanes being opened: counted against the cap already

    def __iter__(self) -> Iterator[C]:
        return iter(self.open)

    def __len__(self) -> int:
        return len(self.open)

    def expecting_late_answer(self, uid: str) -> C | None:
        """The lane on which an answer to a timed-out request with *uid* may still arrive."""
        for lane in self.open:
            if lane.matcher.expects_late_answer(uid):
                return lane
        return None

    def shared_will_do(self, uid: str, shared: C) -> bool:
        """True when a request with *uid* may go on *shared* without :meth:`connection_for`.

        The common case, checked without a coroutine: nothing in flight, no late
        answer and no overdue one carries *uid* there or on a lane.
        """
        return not shared.matcher.busy(uid) and not (self.open and self.expecting_late_answer(uid))

    def keep_only(self, usable: Callable[[C], bool]) -> None:
        """Forget the lanes that are not *usable* any more (closed by the peer, failed)."""
        self.open = [lane for lane in self.open if usable(lane)]

    def take_all(self) -> list[C]:
        """Forget every lane and return them (to be closed)."""
        lanes, self.open = self.open, []
        return lanes

    async def connection_for(
        self, uid: str, shared: C, open_lane: Callable[[], Awaitable[C]],
        reopen_shared: Callable[[], Awaitable[C]],
    ) -> C:
        """Where to send a request with *uid*, the *shared* connection being up.

        Where a late answer to a timed-out request with *uid* may still come:
        there, after it (elsewhere the new request would overtake the attempt
        that may still run on the server). Else the shared connection, unless
        *uid* is in flight on it or its late answer is overdue there; then a
        lane (see _lane_for).
        """
        if shared.matcher.expects_late_answer(uid):
            return shared
        if self.open:
            owner = self.expecting_late_answer(uid)
            if owner is not None:
                return owner
        if not shared.matcher.busy(uid):
            return shared
        return await self._lane_for(uid, open_lane, reopen_shared)

    async def _lane_for(
        self, uid: str, open_lane: Callable[[], Awaitable[C]], shared: Callable[[], Awaitable[C]]
    ) -> C:
        # A lane that carries no request with *uid*; else, below the cap, a new
        # one from *open_lane*; else the shared connection from *shared*.
        for lane in self.open:
            if not lane.matcher.busy(uid):
                return lane
        if len(self.open) + self._opening >= MAX_EXTRA_LANES:
            return await shared()
        self._opening += 1
        try:
            lane = await open_lane()
        finally:
            self._opening -= 1
        self.open.append(lane)
        return lane


class ResponseMatcher:
    """Futures of requests in flight, keyed by uid, with per-uid ordering and timeouts.

    Timeouts use one timer per matcher over its Deadlines rather than a timer
    per request: with equal timeouts new deadlines only ever come last, so the
    timer is re-armed rarely and a request costs a deque append.
    """

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[Response]] = {}
        # uid -> resolved when the late answer of a timed-out request arrives (or
        # after a while): until then another request with that uid must wait, or
        # it would be handed the old request's answer.
        self.abandoned: dict[str, asyncio.Future[None]] = {}
        # uids whose late answer did not come within its window: if it comes
        # after all, it is dropped (unless a request with the uid was sent here
        # since, which cannot tell the two answers apart). Oldest first, at most
        # MAX_OVERDUE_UIDS.
        self.overdue: dict[str, None] = {}
        self._deadlines = Deadlines()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    async def wait(
        self, loop: asyncio.AbstractEventLoop, uid: str, write: Any, payload: bytes, timeout: float
    ) -> Response:
        """Register *uid*, call ``write(uid, payload)`` and wait for the matching response."""
        # Requests sent while handling one request share its uid; responses are
        # matched by uid, so a second request with the same uid waits its turn.
        waited_for_late_answer = False
        while True:
            earlier: asyncio.Future[Any] | None = self.pending.get(uid)
            if earlier is None or earlier.done():
                earlier = self.abandoned.get(uid)
                if earlier is None or earlier.done():
                    break
                waited_for_late_answer = True
            try:
                await asyncio.shield(earlier)
            except asyncio.CancelledError:
                if not earlier.cancelled():
                    raise  # this caller was cancelled, not the earlier request
            except Exception:
                pass
        if waited_for_late_answer and self.overdue and uid in self.overdue:
            # The late answer waited for did not come and may still come: it
            # would be taken for this request's. The caller sends it elsewhere.
            raise _Reroute(uid)
        future: asyncio.Future[Response] = loop.create_future()
        self.pending[uid] = future
        deadline = loop.time() + timeout
        self._deadlines.add(deadline, future, timeout, uid, len(self.pending))
        if self._timer is None or deadline < self._timer_at:
            self._arm(loop, deadline)
        try:
            write(uid, payload)
            return await future
        except asyncio.CancelledError:
            # The caller gave up (asyncio.timeout, a cancelled task): the request
            # may still be answered, and that answer must not go to the next
            # request with this uid (requests sent while handling one share its uid).
            if not future.done() or future.cancelled():
                self._abandon(loop, uid, timeout)
            raise
        finally:
            if self.pending.get(uid) is future:
                del self.pending[uid]

    def in_flight(self, uid: str) -> bool:
        """True while a request with *uid* waits here for its answer."""
        earlier = self.pending.get(uid)
        return earlier is not None and not earlier.done()

    def expects_late_answer(self, uid: str) -> bool:
        """True while an answer to a timed-out request with *uid* may still arrive here."""
        gone = self.abandoned.get(uid)
        return gone is not None and not gone.done()

    def busy(self, uid: str) -> bool:
        """True while a request with *uid* waits here, or a late answer to one may still come."""
        # Membership first: on every request's path, and the uid is usually nowhere.
        return (uid in self.pending and self.in_flight(uid)
                or uid in self.abandoned and self.expects_late_answer(uid)
                or uid in self.overdue)

    def _abandon(self, loop: asyncio.AbstractEventLoop, uid: str, window: float) -> None:
        if uid in self.abandoned:
            return
        gone: asyncio.Future[None] = loop.create_future()
        self.abandoned[uid] = gone

        def expire() -> None:
            if self.abandoned.get(uid) is gone:
                del self.abandoned[uid]
                if not gone.done():
                    self._mark_overdue(uid)
            if not gone.done():
                gone.set_result(None)

        gone.add_done_callback(lambda _: timer.cancel())
        timer = loop.call_later(window, expire)

    def _mark_overdue(self, uid: str) -> None:
        overdue = self.overdue
        overdue.pop(uid, None)
        overdue[uid] = None
        if len(overdue) > MAX_OVERDUE_UIDS:
            del overdue[next(iter(overdue))]

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire_due, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        deadlines = self._deadlines
        for future, timeout, uid in deadlines.pop_due(loop.time()):
            if not future.done():
                future.set_exception(RequestTimeout(f"no response within {timeout:g}s"))
                # At once, not when the caller resumes: another request with this
                # uid may be sent before that, and would get the late answer.
                if self.pending.get(uid) is future:
                    self._abandon(loop, uid, timeout)
        earliest = deadlines.earliest()
        if earliest is not None:
            self._arm(loop, earliest)

    def deliver(self, response: Response) -> None:
        """Resolve the future waiting for *response*'s uid (late answers are dropped)."""
        uid = response.uid
        gone = self.abandoned.pop(uid, None) if uid is not None else None
        if gone is not None:
            # The answer to a request that already timed out: not for anyone waiting now.
            gone.set_result(None)
            return
        future = self.pending.get(uid) if uid is not None else None
        if self.overdue and uid in self.overdue:
            del self.overdue[uid]
            if future is None or future.done():
                log.debug("dropping a late answer for uid %s: it came after its window", uid)
                return
        if future is None:
            if uid is None and len(self.pending) == 1 and response.status != 0:
                # Errors the server could not tag (uid null) go to the only caller.
                future = next(iter(self.pending.values()))
            else:
                log.debug("dropping response for uid %s: nobody waits for it", response.uid)
                return
        if not future.done():
            future.set_result(response)

    def fail_all(self, exc: Exception) -> None:
        """Fail every waiting caller with *exc*."""
        for future in self.pending.values():
            if not future.done():
                future.set_exception(exc)
        for gone in self.abandoned.values():
            if not gone.done():
                gone.set_result(None)
        self.abandoned.clear()
        self.stop()

    def stop(self) -> None:
        """Cancel the timeout timer (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()


class StreamClientProtocol(asyncio.Protocol):
    """One client connection: writes requests, reads response lines, answers heartbeats.

    Requests written while other requests are in flight are gathered and sent
    with one system call at the end of the event-loop iteration: when a read
    of many responses wakes many callers that each send their next request,
    the socket sees one write, not one per request. A request alone on the
    connection is written at once, so one-at-a-time callers wait for nothing.
    """

    def __init__(self, max_message_size: int) -> None:
        self.matcher = ResponseMatcher()
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self._splitter = LineSplitter(max_message_size)
        self._ack: asyncio.Future[None] | None = None
        self._out: list[bytes] | None = None  # gathered requests, flushed by _flush
        self._out_uids: list[str] = []  # their uids, failed as "not sent" if the connection drops
        self._out_size = 0  # bytes gathered

    @property
    def alive(self) -> bool:
        """True while the connection can carry requests."""
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_unsent()
        reason = f": {exc}" if exc else ""
        self.matcher.fail_all(ConnectionLost(f"connection closed while waiting for a response{reason}"))
        if self._ack is not None and not self._ack.done():
            self._ack.set_exception(ConnectionLost("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        lines, overflow = self._splitter.feed(data)
        deliver = self.matcher.deliver
        for line in lines:
            if line == b"\x06":
                if self._ack is not None and not self._ack.done():
                    self._ack.set_result(None)
                continue
            try:
                response = decode_response(line)
            except ProtocolViolation as exc:
                self.abort(BadResponse(f"server sent an invalid response: {exc.message}"))
                return
            deliver(response)
        if overflow:
            self.abort(BadResponse(f"response exceeds the maximum size of {self._splitter.max_size} bytes"))

    def abort(self, exc: Exception) -> None:
        """Fail every caller with *exc* and drop the connection."""
        self._fail_unsent()
        self.matcher.fail_all(exc)
        if self.transport is not None:
            self.transport.abort()

    def request(
        self, loop: asyncio.AbstractEventLoop, uid: str, payload: bytes, timeout: float
    ) -> Coroutine[Any, Any, Response]:
        """Send one request on this connection; await the result for its response.

        A connection that is closed fails it with ConnectFailed, raised by _write.
        """
        # Returned, not awaited here: one coroutine frame less on every resumption.
        return self.matcher.wait(loop, uid, self._write, payload, timeout)

    def _write(self, uid: str, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise _not_sent()
        out = self._out
        if out is not None:
            out.append(payload)
            self._out_uids.append(uid)
            self._out_size += len(payload)
            if len(out) >= GATHER_LIMIT or self._out_size >= GATHER_BYTES:
                self._flush()
        elif len(self.matcher.pending) <= 1 or len(payload) >= GATHER_BYTES:
            # Alone on the connection (nothing to wait for), or big enough that
            # joining it with others would only copy it once more.
            transport.write(payload)
            if transport.is_closing():
                # The send itself failed (the peer had closed: EPIPE, ECONNRESET).
                raise _not_sent()
        else:
            self._out = [payload]
            self._out_uids.append(uid)
            self._out_size = len(payload)
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return  # flushed already (the gathering limit was reached)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if not transport.is_closing():
                self._out = None
                self._out_uids.clear()
                return
        # The connection closed first, or the send itself failed: none of
        # these requests left this process.
        self._fail_unsent()

    def _fail_unsent(self) -> None:
        # Gathered requests that never reached the socket are safe to retry.
        self._out = None
        pending = self.matcher.pending
        for uid in self._out_uids:
            future = pending.get(uid)
            if future is not None and not future.done():
                future.set_exception(_not_sent())
        self._out_uids.clear()

    async def heartbeat(self, timeout: float) -> None:
        """Send ENQ and wait for ACK; close the connection if none arrives in time."""
        loop = asyncio.get_running_loop()
        self._ack = loop.create_future()
        if not self.alive:
            return
        assert self.transport is not None
        self.transport.write(HEARTBEAT_REQUEST)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that arrives together with the ACK, and the client's
            # close() then waits forever for a heartbeat task that keeps beating.
            async with asyncio.timeout(timeout):
                await self._ack
        except TimeoutError:
            log.warning("no heartbeat reply within %gs; dropping the connection", timeout)
            self.abort(ConnectionLost("heartbeat not answered; connection presumed dead"))
        except ConnectionLost:
            pass

    def close(self) -> None:
        """Close the connection; requests still waiting on it fail with ClientClosed."""
        # Before the transport reports the loss: the caller closed the client,
        # which is not the connection dropping (ConnectionLost).
        self._out = None
        self._out_uids.clear()
        self.matcher.fail_all(ClientClosed("the client was closed while waiting for a response"))
        if self.transport is not None:
            self.transport.close()


class BufferedStreamClientProtocol(
    ReceivesIntoSharedBuffer, StreamClientProtocol, asyncio.BufferedProtocol
):
    """The client connection on asyncio's own loops: receives into the shared buffer."""


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamClient(Client):
    """Newline-JSON client over a stream socket; subclasses say how to connect.

    ``persistent=True`` (default): one shared connection, reopened on demand
    after it drops, checked by a heartbeat every ``heartbeat_interval``
    seconds (answered within ``heartbeat_timeout`` or the connection is dropped). ``persistent=False``: one
    connection per request, closed after its response.
    """

    def __init__(
        self,
        *,
        persistent: bool = True,
        heartbeat_interval: float | None = 5.0,
        heartbeat_timeout: float = 5.0,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        retry_delay: float = 0.1,
        retry_on_timeout: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        # Client's options spelled out, not forwarded as **options: mypyc
        # (the compiled build) fails to build a signature of keyword-only
        # floats followed by **kwargs, and a compiled super().__init__(**options)
        # passes the dict as the first positional argument.
        super().__init__(
            timeout=timeout, connect_timeout=connect_timeout, retries=retries,
            retry_delay=retry_delay, retry_on_timeout=retry_on_timeout,
            max_message_size=max_message_size,
        )
        self.persistent = persistent
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._connection: StreamClientProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[StreamClientProtocol] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._alone: set[StreamClientProtocol] = set()  # persistent=False connections in use
        self._lanes: Lanes[StreamClientProtocol] = Lanes()  # extra connections for busy uids

    def _protocol_factory(self) -> StreamClientProtocol:
        if loop_reads_into_fresh_memory(asyncio.get_running_loop()):
            return BufferedStreamClientProtocol(self.max_message_size)
        return StreamClientProtocol(self.max_message_size)

    async def _open(self) -> tuple[asyncio.BaseTransport, Any]:
        raise NotImplementedError

    async def _connect(self) -> StreamClientProtocol:
        try:
            async with asyncio.timeout(self.connect_timeout):  # see heartbeat() for why not wait_for
                _, protocol = await self._open()
        except (TimeoutError, OSError) as exc:
            # str(), not the exception itself: a TimeoutError is truthy but prints as "".
            reason = str(exc) or f"timed out after {self.connect_timeout:g}s"
            raise ConnectFailed(f"cannot connect to {self.url}: {reason}") from exc
        return protocol

    async def _shared_connection(self) -> StreamClientProtocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or a client reused on a new event loop: start afresh.
            self._loop = loop
            self._connection = None
            self._connecting = None
            self._heartbeat_task = None
            self._lanes = Lanes()  # bound to the old loop, like the shared connection
        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        connecting = self._connecting
        if connecting is None or connecting.done():
            # One attempt shared by every caller that needs the connection now:
            # taking turns, N callers would wait up to N connect timeouts.
            # In an empty context: the connection and its heartbeat outlive the
            # request that happened to open them, and must not log with its uid.
            connecting = self._connecting = loop.create_task(
                self._open_shared(), context=contextvars.Context())
            # Every waiter may have given up before it fails: read its outcome
            # here, or asyncio reports "Task exception was never retrieved".
            connecting.add_done_callback(retrieve_exception)
        try:
            # Shielded: a caller giving up must not cancel the others' attempt.
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if connecting.cancelled() and current is not None and not current.cancelling():
                # Not ConnectFailed: that would be retried, reopening the client just closed.
                raise ClientClosed(f"the client was closed while connecting to {self.url}") from None
            raise

    async def _open_shared(self) -> StreamClientProtocol:
        connection = await self._connect()
        self._connection = connection
        if self.heartbeat_interval and (self._heartbeat_task is None or self._heartbeat_task.done()):
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._keep_alive())
        return connection

    async def _keep_alive(self) -> None:
        assert self.heartbeat_interval
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            connection = self._connection
            if connection is None or not connection.alive:
                return
            # The lanes too: one whose path died silently would hang every request sent on it.
            # return_exceptions: one connection's trouble must not end the heartbeats of all.
            await asyncio.gather(*(c.heartbeat(self.heartbeat_timeout)
                                   for c in (connection, *self._lanes)),
                                 return_exceptions=True)

    def _exchange(self, uid: str, payload: bytes, timeout: float) -> Awaitable[Response]:
        # A plain function returning the awaitable: on the common path (the
        # shared connection is up) the caller awaits the matcher directly.
        if self.persistent:
            connection = self._connection
            loop = self._loop
            if connection is not None and connection.alive and loop is not None:
                if loop is asyncio.get_running_loop() and self._lanes.shared_will_do(uid, connection):
                    # (A dead lane expects nothing: losing a connection ends its waits.)
                    return connection.request(loop, uid, payload, timeout)
        return self._exchange_connecting(uid, payload, timeout)

    async def _exchange_connecting(self, uid: str, payload: bytes, timeout: float) -> Response:
        loop = asyncio.get_running_loop()
        if not self.persistent:
            return await self._exchange_alone(uid, payload, timeout)
        shared = await self._shared_connection()
        if self._lanes:
            self._lanes.keep_only(lambda lane: lane.alive)
        connection = await self._lanes.connection_for(
            uid, shared, self._connected_unless_closed, self._shared_connection)
        return await connection.request(loop, uid, payload, timeout)

    async def _connected_unless_closed(self) -> StreamClientProtocol:
        """A new connection, or ClientClosed if close() came while it was being opened."""
        generation = self._generation
        try:
            connection = await self._connect()
        except ConnectFailed as exc:
            if generation != self._generation:
                # ClientClosed is not retried (ConnectFailed would be, reopening the client).
                raise ClientClosed(f"the client was closed while connecting to {self.url}") from exc
            raise
        if generation != self._generation:
            connection.close()  # nothing may be sent on it now
            raise ClientClosed(f"the client was closed while connecting to {self.url}")
        return connection

    async def _exchange_alone(self, uid: str, payload: bytes, timeout: float) -> Response:
        """One request on a connection of its own, closed after the answer (persistent=False)."""
        connection = await self._connected_unless_closed()
        self._alone.add(connection)
        try:
            return await connection.request(asyncio.get_running_loop(), uid, payload, timeout)
        finally:
            self._alone.discard(connection)
            connection.close()

    async def close(self) -> None:
        """Close the shared connection and stop its heartbeat."""
        loop = asyncio.get_running_loop()
        self._generation += 1
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()  # its waiters get ConnectFailed
            if connecting.get_loop() is loop:
                await asyncio.wait([connecting])
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is loop:
                # asyncio.wait never raises the task's CancelledError, so a
                # cancellation of the caller itself still propagates.
                await asyncio.wait([task])
        for extra in [*self._alone, *self._lanes.take_all()]:
            extra.close()  # its requests fail with ClientClosed, like those on the shared one
        connection, self._connection = self._connection, None
        if connection is not None and connection.alive:
            connection.close()
            if connection.closed.get_loop() is loop:
                await asyncio.wait([connection.closed], timeout=1.0)
