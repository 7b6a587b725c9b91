"""The ``eco.*`` standard endpoints every application has: statistics, error states, queues.

Request model for every queue action: ``{"queue_route_key": str, "request_uid"?: str}``.
An unknown queue or uid is answered with status 300 and a message naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel

from .errors import Reject
from .protocol import Status
from .queues.endpoint import QueuedEndpoint
from .queues.pair import EntryNotFound
from .queues.sender import QueuedSender
from .queues.store import Entry
from .routing import Endpoint, Registry
from .telemetry.error_states import ErrorStateKeeper
from .telemetry.stats import StatisticsKeeper


class StatisticsRequest(BaseModel):
    """Which statistics: the running period, the last gathered one, or the whole history."""

    type: Literal["current", "gathered", "full"] = "current"


class ClearErrorStates(BaseModel):
    """Error states to clear; all of them when ``names`` is omitted."""

    names: list[str] | None = None


class QueueRequest(BaseModel):
    """Names the queue (route key of a queued endpoint, or name of a queued sender)."""

    queue_route_key: str
    request_uid: str | None = None


class OptionalQueueRequest(BaseModel):
    """``data`` may omit the queue to list every queue."""

    queue_route_key: str | None = None


def _add(registry: Registry, route_key: str, handler: Callable[..., Awaitable[Any]]) -> None:
    registry.add(Endpoint(route_key, handler, reserved=True))


def _uid(request: QueueRequest) -> str:
    if not request.request_uid:
        raise Reject(Status.VALIDATION_ERROR, "request_uid is required for this action")
    return request.request_uid


async def _error_entry(queue: Any, request: QueueRequest, *, pop: bool = False) -> Entry:
    """The error entry *request* names, or a status-300 rejection saying it is not there."""
    pair = queue.require_pair()
    try:
        return await (pair.pop_error if pop else pair.find_error)(_uid(request))
    except EntryNotFound as exc:
        raise _not_in_errors(request, str(exc)) from None


def _not_in_errors(request: QueueRequest, message: str) -> Reject:
    return Reject(Status.VALIDATION_ERROR, f"{message} of {request.queue_route_key!r}",
                  {"queue_route_key": request.queue_route_key})


def _error_actions(registry: Registry, prefix: str, find: Callable[[str], Any]) -> None:
    """The errors.* family, shared by queued endpoints and queued senders."""

    async def first_10(request: QueueRequest) -> list[dict[str, Any]]:
        queue = find(request.queue_route_key)
        return [e.describe() for e in await queue.require_pair().error_entries(limit=10)]

    async def reprocess_all(request: QueueRequest) -> dict[str, int]:
        queue = find(request.queue_route_key)
        entries = await queue.require_pair().error_entries()
        return {"reprocessed": await queue.reprocess(entries)}

    async def reprocess_one(request: QueueRequest) -> dict[str, int]:
        queue = find(request.queue_route_key)
        entry = await _error_entry(queue, request)
        if not await queue.reprocess([entry]):
            # Another call (a concurrent reprocess, pop or clear) took the entry
            # after we found it: to this caller the uid is not in the error queue.
            raise _not_in_errors(request, str(EntryNotFound.for_uid(entry.uid)))
        return {"reprocessed": 1}

    async def inspect_request(request: QueueRequest) -> dict[str, Any]:
        return (await _error_entry(find(request.queue_route_key), request)).describe()

    async def pop_request(request: QueueRequest) -> dict[str, Any]:
        queue = find(request.queue_route_key)
        entry = await _error_entry(queue, request, pop=True)
        if isinstance(queue, QueuedSender):
            queue.forget_errors([entry])
        return entry.describe()

    async def clear(request: QueueRequest) -> dict[str, int]:
        queue = find(request.queue_route_key)
        cleared = await queue.require_pair().clear_errors()
        if isinstance(queue, QueuedSender):
            # Whatever failed while the clear ran is still blocking its group;
            # every other group's failed head is gone.
            await queue.unblock_removed()
        return {"cleared": cleared}

    _add(registry, f"{prefix}.errors.get_first_10", first_10)
    _add(registry, f"{prefix}.errors.reprocess.all", reprocess_all)
    _add(registry, f"{prefix}.errors.reprocess.one", reprocess_one)
    _add(registry, f"{prefix}.errors.inspect_request", inspect_request)
    _add(registry, f"{prefix}.errors.pop_request", pop_request)
    _add(registry, f"{prefix}.errors.clear", clear)


def standard_endpoints(
    app_registry: Registry, statistics: StatisticsKeeper, states: ErrorStateKeeper,
    identity: dict[str, Any] | None = None,
) -> Registry:
    """Build the eco.* endpoints bound to the queues of *app_registry* and the keepers.

    *identity* (application name, instance, pid) is added to every statistics answer.
    """
    registry = Registry()

    async def statistics_get(request: StatisticsRequest) -> dict[str, Any]:
        return {**(identity or {}), **statistics.snapshot(request.type)}

    async def error_states_get() -> dict[str, Any]:
        return states.get()

    async def error_states_clear(request: ClearErrorStates) -> dict[str, Any]:
        cleared = states.clear_all() if request.names is None else states.clear(*request.names)
        return {"cleared": cleared}

    _add(registry, "eco.statistics.get", statistics_get)
    _add(registry, "eco.error_states.get", error_states_get)
    _add(registry, "eco.error_states.clear", error_states_clear)

    def handlers() -> dict[str, QueuedEndpoint]:
        return {k: e for k, e in app_registry.endpoints.items() if isinstance(e, QueuedEndpoint)}

    def find_handler(key: str) -> QueuedEndpoint:
        found = handlers().get(key)
        if found is None:
            raise Reject(Status.VALIDATION_ERROR, f"unknown queued endpoint {key!r}",
                         {"known": sorted(handlers())})
        return found

    def find_sender(key: str) -> QueuedSender:
        found = app_registry.senders.get(key)
        if found is None:
            raise Reject(Status.VALIDATION_ERROR, f"unknown queued sender {key!r}",
                         {"known": sorted(app_registry.senders)})
        return found

    async def handler_data(request: OptionalQueueRequest) -> Any:
        if request.queue_route_key is None:
            return [e.data() for e in handlers().values()]
        return find_handler(request.queue_route_key).data()

    _add(registry, "eco.queued_handler.data", handler_data)
    for what in ("receiving", "processing", "all"):
        for action in ("pause", "unpause"):
            def make(what: str = what, paused: bool = action == "pause") -> Callable[..., Awaitable[Any]]:
                async def toggle(request: QueueRequest) -> dict[str, Any]:
                    queue = find_handler(request.queue_route_key)
                    queue.set_paused(receiving=paused if what in ("receiving", "all") else None,
                                     processing=paused if what in ("processing", "all") else None)
                    return queue.data()
                return toggle
            _add(registry, f"eco.queued_handler.{what}.{action}", make())
    _error_actions(registry, "eco.queued_handler", find_handler)

    async def sender_data(request: OptionalQueueRequest) -> Any:
        if request.queue_route_key is None:
            return [s.data() for s in app_registry.senders.values()]
        return find_sender(request.queue_route_key).data()

    async def send_pause(request: QueueRequest) -> dict[str, Any]:
        sender = find_sender(request.queue_route_key)
        sender.set_paused(True)
        return sender.data()

    async def send_unpause(request: QueueRequest) -> dict[str, Any]:
        sender = find_sender(request.queue_route_key)
        sender.set_paused(False)
        return sender.data()

    _add(registry, "eco.queued_sender.data", sender_data)
    _add(registry, "eco.queued_sender.send_process.pause", send_pause)
    _add(registry, "eco.queued_sender.send_process.unpause", send_unpause)
    _error_actions(registry, "eco.queued_sender", find_sender)
    return registry
