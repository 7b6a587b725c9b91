"""Exceptions of the framework, shared by servers, clients and senders."""

from __future__ import annotations

from typing import Any

from .protocol import Status


class EcosysError(Exception):
    """Base class of every exception raised by ecosys."""


class ConfigurationError(EcosysError):
    """A setting, registration or start-up condition is invalid."""


class QueueFileError(EcosysError):
    """A durable queue's file cannot be used: corrupt, not SQLite, not writable, its disk full."""


class TransportError(EcosysError):
    """A request could not be delivered or its response not received."""


class ConnectFailed(TransportError):
    """The connection to the server could not be opened (safe to retry)."""


class ConnectionLost(TransportError):
    """The connection closed while a response was awaited."""


class BroadcastIncomplete(EcosysError):
    """A queued broadcaster stored the message for some targets only.

    ``stored`` maps each sender that has it to its uid, ``failed`` each other
    sender to its exception: retry only the failed ones, or the others get it twice.
    """

    def __init__(self, message: str, stored: dict[str, str], failed: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.stored = stored
        self.failed = failed


class ClientClosed(TransportError):
    """The client was closed while the request waited: for its connection, or for its answer.

    Not retried by the client: a request already sent may have been processed.
    """


class RequestTimeout(TransportError, TimeoutError):
    """No response arrived within the timeout."""


class BadResponse(TransportError):
    """The peer sent bytes that are not a valid response."""


class ResponseError(EcosysError):
    """The server answered with a non-zero status.

    Subclasses exist for each status so callers can catch what they handle.
    """

    status: int = Status.UNKNOWN

    def __init__(
        self, message: str, details: Any = None, *, status: int | None = None, uid: str | None = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.details = details
        self.uid = uid

    def __str__(self) -> str:
        return f"status {self.status}: {self.message}"


class ProtocolErrorResponse(ResponseError):
    """Status 100: the server could not parse the request."""

    status = Status.PROTOCOL_ERROR


class ClientDenied(ResponseError):
    """Status 200: the server refused this client."""

    status = Status.CLIENT_DENIED


class ValidationFailed(ResponseError):
    """Status 300: the request data does not fit the endpoint's model."""

    status = Status.VALIDATION_ERROR


class UnknownRoute(ResponseError):
    """Status 400: the server has no endpoint for the route key."""

    status = Status.UNKNOWN_ROUTE


class ApplicationBusy(ResponseError):
    """Status 500: the server is not accepting this work right now."""

    status = Status.APPLICATION_BUSY


class ProcessingFailed(ResponseError):
    """Status 600: the handler raised."""

    status = Status.PROCESSING_FAILURE


class UnknownError(ResponseError):
    """Status 999 or any status this version does not know."""

    status = Status.UNKNOWN


_BY_STATUS: dict[int, type[ResponseError]] = {
    cls.status: cls
    for cls in (
        ProtocolErrorResponse,
        ClientDenied,
        ValidationFailed,
        UnknownRoute,
        ApplicationBusy,
        ProcessingFailed,
        UnknownError,
    )
}


def response_error(status: int, data: Any, uid: str | None = None) -> ResponseError:
    """Build the typed exception for an error response's status and data."""
    message = "error response"
    details = None
    if isinstance(data, dict):
        message = str(data.get("message", message))
        details = data.get("details")
    elif data is not None:
        message = str(data)
    cls = _BY_STATUS.get(status, UnknownError)
    return cls(message, details, status=status, uid=uid)


class Reject(EcosysError):
    """Raise from a handler to answer with a chosen non-zero status.

    Any other exception a handler raises is answered with status 600.
    """

    def __init__(self, status: int, message: str, details: Any = None) -> None:
        if status == Status.SUCCESS:
            raise ValueError("Reject needs a non-zero status")
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.details = details
