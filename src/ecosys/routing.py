"""Endpoints, the route table and dispatch of decoded requests to handlers.

Routing works on bytes in and bytes out, so a handler can be tested by calling
:meth:`Router.handle` with a request line, no socket needed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Any, ClassVar

import pydantic
from mypy_extensions import mypyc_attr
from pydantic import BaseModel, TypeAdapter

from .errors import ConfigurationError, Reject
from .protocol import (
    ProtocolViolation,
    Status,
    decode_request_fields,
    encode_error,
    encode_success_json,
    value_json,
)
from .telemetry.stats import StatisticsKeeper, stats
from .tracking import current_uid

log = logging.getLogger("ecosys.routing")

Handler = Callable[..., Awaitable[Any]]
RESERVED_PREFIX = "eco."


@mypyc_attr(allow_interpreted_subclasses=True)
class Endpoint:
    """A route key bound to an async handler and the model of its request data."""

    # True for endpoints whose requests are only stored on arrival (queued
    # endpoints): servers acknowledge them through Router.store_many, without a task.
    # A ClassVar, so that the compiled build reads the subclass's value too.
    stores_without_task: ClassVar[bool] = False

    def __init__(self, route_key: str, handler: Handler, *, reserved: bool = False) -> None:
        if not isinstance(route_key, str) or not route_key.strip():
            raise ConfigurationError("a route key must be a non-empty string")
        if route_key.startswith(RESERVED_PREFIX) and not reserved:
            raise ConfigurationError(
                f"route key {route_key!r}: the prefix {RESERVED_PREFIX!r} is reserved "
                "for the standard endpoints"
            )
        if not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(
                f"endpoint {route_key!r}: handler {handler.__qualname__} must be an async function"
            )
        self.route_key = route_key
        self.handler = handler
        self.request_param: str | None = None
        self.request_type: Any = None
        self.uid_param: str | None = None
        self.uid_as_uuid = False
        self._positional = False  # True when the handler is called as handler(value)
        self._request_positional_only = False  # handler(request, /, uid)
        self._inspect_signature()
        self.validate: Callable[[Any], Any] = self._build_validator()

    @property
    def name(self) -> str:
        """The handler's qualified name, for messages."""
        return f"{self.handler.__module__}.{self.handler.__qualname__}"

    def _inspect_signature(self) -> None:
        try:
            hints = typing.get_type_hints(self.handler)
        except Exception as exc:  # unresolvable forward references
            raise ConfigurationError(
                f"endpoint {self.route_key!r}: cannot read the annotations of {self.name}: {exc}"
            ) from exc
        for param in inspect.signature(self.handler).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigurationError(
                    f"endpoint {self.route_key!r}: *args/**kwargs are not supported"
                )
            if param.name == "uid":
                self.uid_param = param.name
                self.uid_as_uuid = hints.get("uid") in (uuid.UUID, uuid.UUID | None)
                self._positional = False
                continue
            if self.request_param is not None:
                raise ConfigurationError(
                    f"endpoint {self.route_key!r}: {self.name} takes more than one request "
                    "parameter; it may take one model parameter and an optional 'uid'"
                )
            if param.name not in hints:
                raise ConfigurationError(
                    f"endpoint {self.route_key!r}: parameter {param.name!r} of {self.name} "
                    "needs a type annotation (the request model)"
                )
            self.request_param = param.name
            self.request_type = hints[param.name]
            self._request_positional_only = param.kind == param.POSITIONAL_ONLY
            self._positional = self.uid_param is None and param.kind in (
                param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD
            )

    def _build_validator(self) -> Callable[[Any], Any]:
        """The function that turns request data into the handler's argument.

        It raises pydantic.ValidationError; an endpoint without a request
        parameter accepts any data and passes nothing.
        """
        kind = self.request_type
        if self.request_param is None:
            return _no_value
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            # The model's own validator, without model_validate's Python wrapper.
            validate_python = kind.__pydantic_validator__.validate_python

            def validate_model(data: Any) -> Any:
                return validate_python({} if data is None else data)

            return validate_model
        return TypeAdapter(kind).validate_python

    def call(self, uid: str, value: Any) -> Coroutine[Any, Any, Any]:
        """The handler's coroutine for a validated request value (await it to run the handler)."""
        # A plain function, not a coroutine: one frame less on every request.
        if self._positional:
            return self.handler(value)
        kwargs: dict[str, Any] = {}
        if self.uid_param is not None:
            kwargs[self.uid_param] = uuid.UUID(uid) if self.uid_as_uuid else uid
        if self._request_positional_only:
            return self.handler(value, **kwargs)
        if self.request_param is not None:
            kwargs[self.request_param] = value
        return self.handler(**kwargs)

    def invoke(self, call: PreparedCall) -> Coroutine[Any, Any, Any]:
        """The coroutine that answers a prepared call (queued endpoints store it instead)."""
        return self.call(call.uid, call.value)


def _no_value(data: Any) -> None:
    return None


# What a handler may end with besides returning: any exception, SystemExit (a
# library calling sys.exit() must not stop a server or a queue worker) and a
# CancelledError of its own (an awaited sub-task someone else cancelled).
HANDLER_FAILURES = (Exception, SystemExit, asyncio.CancelledError)


def cancellation_mark() -> int:
    """The current task's cancellation count, taken before running a handler (see is_stop)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def is_stop(exc: BaseException, mark: int) -> bool:
    """True if *exc* is the current task being cancelled since *mark*, not a handler failure."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    # Compared with the mark, not with zero: on 3.11 a TaskGroup can leave the
    # count above zero for good, and long-lived tasks (a queue worker) run many handlers.
    return task is None or task.cancelling() > mark


class Registry:
    """A set of endpoints keyed by route key; decorators fill the default one."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        # Queued senders by name; typed loosely because queues sit above routing.
        self.senders: dict[str, Any] = {}

    def add(self, endpoint: Endpoint) -> Endpoint:
        """Register *endpoint*; a route key registered twice is an error."""
        existing = self.endpoints.get(endpoint.route_key)
        if existing is not None:
            raise ConfigurationError(
                f"duplicate route key {endpoint.route_key!r}: {endpoint.name} and {existing.name}"
            )
        self.endpoints[endpoint.route_key] = endpoint
        return endpoint

    def add_sender(self, sender: Any) -> Any:
        """Register a queued sender; a name registered twice is an error."""
        if sender.name in self.senders:
            raise ConfigurationError(f"duplicate queued sender name {sender.name!r}")
        self.senders[sender.name] = sender
        return sender

    def get(self, route_key: str) -> Endpoint | None:
        """The endpoint for *route_key*, or None."""
        return self.endpoints.get(route_key)

    def clear(self) -> None:
        """Forget every endpoint and sender."""
        self.endpoints.clear()
        self.senders.clear()

    def __contains__(self, route_key: object) -> bool:
        return route_key in self.endpoints

    def __len__(self) -> int:
        return len(self.endpoints)


default_registry = Registry()


def reset_default_registry() -> None:
    """Empty the default registry (tests call this between cases)."""
    default_registry.clear()


def endpoint(route_key: str, *, registry: Registry | None = None) -> Callable[[Handler], Handler]:
    """Register an async handler for *route_key*; the request model is its annotation."""

    def register(func: Handler) -> Handler:
        (registry if registry is not None else default_registry).add(Endpoint(route_key, func))
        return func

    return register


class PreparedCall:
    """A request that passed parsing, routing and validation, ready to run."""

    __slots__ = ("endpoint", "uid", "value", "data")

    def __init__(self, endpoint: Endpoint, uid: str, value: Any, data: Any) -> None:
        self.endpoint = endpoint
        self.uid = uid
        self.value = value  # validated, as the handler takes it
        self.data = data  # as the client sent it (decoded JSON)


class Router:
    """Maps request lines to endpoints and turns outcomes into response lines."""

    def __init__(
        self, registry: Registry | None = None, standard: Registry | None = None,
        statistics: StatisticsKeeper | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        self.stats = statistics if statistics is not None else stats
        self.standard = standard.endpoints if standard is not None else {}

    def prepare(self, line: bytes) -> PreparedCall | bytes:
        """Parse and validate *line*; return a call to run, or an error response line."""
        try:
            uid, route_key, data = decode_request_fields(line)
        except ProtocolViolation as violation:
            # (One name per except clause: the compiled build types a name once per function.)
            self.stats.record("endpoints", "<protocol error>", Status.PROTOCOL_ERROR, None)
            return encode_error(violation.uid, Status.PROTOCOL_ERROR, violation.message,
                                violation.details)
        # Decoding, routing and validation in one function: this runs for every
        # request, and each call saved is measurable.
        target = self.registry.endpoints.get(route_key) or self.standard.get(route_key)
        if target is None:
            return self._unknown_route(uid, route_key)
        try:
            value = target.validate(data)
        except pydantic.ValidationError as invalid:
            return self._invalid_data(uid, route_key, invalid)
        except Exception as exc:
            # A validator of the model that raises something else (a KeyError in
            # a before-validator): a bug on this side, answered like a handler
            # that raised, instead of escaping into the transport's read callback.
            return self._validator_failed(uid, route_key, exc)
        return PreparedCall(target, uid, value, data)

    def _validator_failed(self, uid: str, route_key: str, exc: Exception) -> bytes:
        log.error("validating a request for %r raised", route_key, exc_info=exc)
        self.stats.record("endpoints", route_key, Status.PROCESSING_FAILURE, None)
        name = type(exc).__name__
        return encode_error(
            uid, Status.PROCESSING_FAILURE, f"validating the request data raised {name}: {exc}",
            {"exception": name},
        )

    def _unknown_route(self, uid: str, route_key: str) -> bytes:
        # One key for every unknown route: clients must not be able to grow the table.
        self.stats.record("endpoints", "<unknown route>", Status.UNKNOWN_ROUTE, None)
        return encode_error(
            uid, Status.UNKNOWN_ROUTE, f"unknown route key: {route_key!r}", {"route_key": route_key}
        )

    def _invalid_data(self, uid: str, route_key: str, exc: pydantic.ValidationError) -> bytes:
        self.stats.record("endpoints", route_key, Status.VALIDATION_ERROR, None)
        return encode_error(
            uid, Status.VALIDATION_ERROR, f"request data does not fit {route_key!r}",
            _validation_details(exc),
        )

    async def serve(self, call: PreparedCall, respond: Callable[[bytes], None]) -> None:
        """Run a prepared call with its uid in the tracking context; pass the response line to *respond*.

        *respond* is not called if the call is cancelled (server shutdown).
        """
        uid = call.uid
        token = current_uid.set(uid)
        started = perf_counter()
        mark = cancellation_mark()
        try:
            result = await call.endpoint.invoke(call)
            line = encode_success_json(uid, value_json(result))
            status = 0
        except Reject as rejected:
            status = rejected.status
            line = encode_error(uid, rejected.status, rejected.message, rejected.details)
        except HANDLER_FAILURES as exc:
            if is_stop(exc, mark):
                raise  # this request is being cancelled (shutdown): no answer
            log.exception("handler for %r raised", call.endpoint.route_key)
            status = Status.PROCESSING_FAILURE
            line = encode_error(
                uid, status, f"{type(exc).__name__}: {exc}", {"exception": type(exc).__name__}
            )
        finally:
            current_uid.reset(token)
        elapsed = perf_counter() - started
        # Answered before the bookkeeping: the caller need not wait for it.
        respond(line)
        self.stats.record("endpoints", call.endpoint.route_key, status, elapsed)

    async def run(self, call: PreparedCall) -> bytes:
        """Run a prepared call and return its response line."""
        lines: list[bytes] = []
        await self.serve(call, lines.append)
        return lines[0]

    def store_many(
        self, calls: list[PreparedCall], respond_many: Callable[[list[bytes]], None]
    ) -> list[asyncio.Future[None]]:
        """Acknowledge calls to queued endpoints read together, storing each endpoint's run at once.

        Runs of calls to the same endpoint share one insert, one commit
        listener and one write of their acknowledgements: a read of many
        pipelined requests costs the loop per read what it would cost per
        request. Arrival order is kept. Returns the commits to wait for.
        """
        pending: list[asyncio.Future[None]] = []
        start, count = 0, len(calls)
        while start < count:
            endpoint = calls[start].endpoint
            end = start + 1
            while end < count and calls[end].endpoint is endpoint:
                end += 1
            run = calls if end - start == count else calls[start:end]
            self._store_run(endpoint, run, respond_many, pending)
            start = end
        return pending

    def _store_run(
        self, endpoint: Endpoint, calls: list[PreparedCall],
        respond_many: Callable[[list[bytes]], None], pending: list[asyncio.Future[None]],
    ) -> None:
        route_key = endpoint.route_key
        started = perf_counter()
        stats = self.stats

        def stored(error: BaseException | None) -> None:
            if error is None:
                stats.record("endpoints", route_key, 0, perf_counter() - started, len(calls))
                respond_many([encode_success_json(call.uid, b'{"uid":"' + call.uid.encode() + b'"}')
                              for call in calls])
            else:
                stats.record("endpoints", route_key, Status.PROCESSING_FAILURE, None, len(calls))
                respond_many([_storage_failure(call.uid, error) for call in calls])

        try:
            committed = endpoint.store_many_nowait(calls, stored)  # type: ignore[attr-defined]
        except Reject as rejected:
            stats.record("endpoints", route_key, rejected.status, perf_counter() - started,
                         len(calls))
            respond_many([encode_error(call.uid, rejected.status, rejected.message,
                                       rejected.details) for call in calls])
            return
        except Exception as exc:
            if len(calls) > 1:
                # Nothing of the run was stored (the insert is all or nothing): one
                # call at a time, each request gets its own answer for what went wrong.
                for call in calls:
                    self._store_run(endpoint, [call], respond_many, pending)
                return
            log.exception("storing a request for %r failed", route_key)
            stored(exc)
            return
        if committed is None:
            stored(None)
        elif committed not in pending:
            pending.append(committed)

    async def handle(self, line: bytes) -> bytes:
        """Answer one request line (without newline) with one response line."""
        prepared = self.prepare(line)
        if isinstance(prepared, bytes):
            return prepared
        return await self.run(prepared)


def _storage_failure(uid: str, exc: BaseException | None) -> bytes:
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "cancelled"
    return encode_error(uid, Status.PROCESSING_FAILURE, f"the request could not be stored: {reason}",
                        {"exception": type(exc).__name__ if exc is not None else "CancelledError"})


def _validation_details(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
