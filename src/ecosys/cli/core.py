"""What every ``eco`` command shares: targets, clients, one request, failures and exit codes.

A command turns its arguments into one request, sends it with :func:`call`
and renders the answer. Anything that goes wrong on the way becomes a
:class:`CliFailure` carrying the exit code and a one-line message;
:func:`handled` prints it and exits, so no failure an operator can cause
ever ends in a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import typer

from ..errors import EcosysError, RequestTimeout, ResponseError, TransportError
from ..transport import Client, client_from_url

EXIT_OK = 0
EXIT_STATUS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_TIMEOUT = 5.0

EXIT_CODES_HELP = (
    "[bold]Exit codes[/bold]\n"
    " 0  success\n"
    " 1  the service answered with an error status (stderr: status N: message)\n"
    " 2  usage error: bad arguments, malformed target URL, invalid JSON argument\n"
    " 3  connection failure or timeout: the service is down, unreachable or hung\n"
    "130 interrupted (Ctrl-C)"
)


class CliFailure(Exception):
    """A failure to report on one line of stderr and end the command with *code*.

    ``payload`` is what ``--json`` prints on stdout for it (None: nothing).
    """

    def __init__(self, code: int, message: str, payload: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.payload = payload


def one_line(text: str) -> str:
    """*text* with line breaks turned into spaces, so a message is exactly one line."""
    return " ".join(str(text).splitlines()).strip()


def usage_error(message: str) -> CliFailure:
    """A usage failure (exit 2) with an ``eco: error:`` message."""
    return CliFailure(EXIT_USAGE, f"eco: error: {message}")


def make_client(url: str, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A client for *url* that makes one attempt and waits at most *timeout* seconds.

    A malformed URL is a usage error. Stream clients send no heartbeats: a
    command lives for one or two requests.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed or invalid [IPv6] host
        raise usage_error(f"bad target {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "uds" and parts.netloc:
        relative = parts.netloc + parts.path
        if not os.path.exists(relative):
            # Most likely two slashes where three were meant.
            raise usage_error(
                f"bad target {url!r}: that is the relative path {relative!r}, which does not exist "
                f"here; for an absolute path use three slashes: uds:///{relative}")
    options: dict[str, Any] = {
        "timeout": timeout,
        "connect_timeout": timeout,  # --timeout covers the connection too, as documented
        "retries": 0,
    }
    if scheme in ("tcp", "uds"):
        options["heartbeat_interval"] = None
    try:
        return client_from_url(url, **options)
    except ValueError as exc:
        raise usage_error(f"bad target {exc}") from None


def check_target(url: str) -> str:
    """Fail with a usage error unless *url* is a valid target URL; return it."""
    make_client(url)
    return url


def describe_response_error(exc: ResponseError) -> str:
    """``status N: message``, with a short hint from the details when they carry one."""
    text = f"status {exc.status}: {exc.message}"
    details = exc.details
    hint = ""
    if isinstance(details, dict) and isinstance(details.get("known"), list):
        known = ", ".join(str(k) for k in details["known"]) or "none"
        hint = f"known: {known}"
    elif isinstance(details, list) and details and all(isinstance(d, dict) for d in details):
        parts = []
        for item in details[:3]:
            loc = ".".join(str(p) for p in item.get("loc") or []) or "data"
            parts.append(f"{loc}: {item.get('msg', '?')}")
        if len(details) > 3:
            parts.append(f"and {len(details) - 3} more")
        hint = "; ".join(parts)
    return one_line(f"{text} ({hint})" if hint else text)


def describe_transport_error(url: str, route_key: str, timeout: float, exc: BaseException) -> str:
    """One line saying why *url* could not be asked (down, unreachable, hung, not ecosys)."""
    if isinstance(exc, RequestTimeout):
        return f"eco: {url}: no answer to {route_key!r} within {timeout:g}s (service hung or overloaded?)"
    text = str(exc) or type(exc).__name__
    if url not in text:
        text = f"{url}: {text}"
    return one_line(f"eco: {text}")


async def _request(client: Client, route_key: str, data: Any, uid: str | None) -> Any:
    try:
        return await client.request(route_key, data, uid=uid)
    finally:
        await client.close()


def call(url: str, route_key: str, data: Any = None, *, timeout: float = DEFAULT_TIMEOUT,
         uid: str | None = None) -> Any:
    """Send one request to *url* on a fresh event loop and return the response data.

    Raises :class:`CliFailure`: exit 1 for an error status, 3 when the
    service cannot be reached or does not answer in time.
    """
    client = make_client(url, timeout)
    try:
        return asyncio.run(_request(client, route_key, data, uid))
    except ResponseError as exc:
        payload = {"status": exc.status, "message": exc.message, "details": exc.details}
        raise CliFailure(EXIT_STATUS, describe_response_error(exc), payload) from None
    except (TransportError, OSError, TimeoutError) as exc:
        raise CliFailure(EXIT_UNREACHABLE, describe_transport_error(url, route_key, timeout, exc)) from None
    except EcosysError as exc:  # anything else the framework raises: still one line
        raise CliFailure(EXIT_UNREACHABLE, one_line(f"eco: {url}: {exc}")) from None


def emit_json(document: Any) -> None:
    """Print *document* as one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def stop_writing_to_a_closed_pipe() -> None:
    """Point stdout at /dev/null (the reader is gone) and exit 0."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)


@contextmanager
def handled(json_output: bool = False) -> Iterator[None]:
    """Report a :class:`CliFailure` (or Ctrl-C) on one line and exit with its code."""
    try:
        yield
    except CliFailure as failure:
        if json_output and failure.payload is not None:
            emit_json(failure.payload)
        sys.stdout.flush()
        print(one_line(failure.message), file=sys.stderr, flush=True)
        raise typer.Exit(failure.code) from None
    except KeyboardInterrupt:
        print("eco: interrupted", file=sys.stderr, flush=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except BrokenPipeError:
        stop_writing_to_a_closed_pipe()
    except Exception as exc:
        # An answer of an unexpected shape (not an ecosys service, another
        # version) must not end in a traceback.
        sys.stdout.flush()
        print(one_line(f"eco: unexpected answer ({type(exc).__name__}: {exc}); is the target an "
                       "ecosys service of a compatible version?"), file=sys.stderr, flush=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
