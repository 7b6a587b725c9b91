"""The router: the Fun Factory's front door.

Run it (the services it calls may start later; it reconnects):

    ECOENV_QUEUE_DIR=/tmp/ff python examples/fun_factory/router.py -i 0 --tcp 127.0.0.1:8900

- ``router.ask`` ``{"topic": "joke"}`` -> ``{"topic": "joke", "service": "joker", "text": "..."}``.
  Topics: ``fortune`` (``text``: a name, optional), ``joke``, ``lottery``,
  ``eight_ball`` (``text``: a yes-or-no question ending in "?"), ``time`` (``text``: a
  time zone, default UTC).

Each topic is served by its own service, called through a ``@sender``. The uid of the
client's request travels with every call, so one uid names the message in the logs of
the client, the router, the service and the tracker, and in the tracker's database.

After answering, the router tells the tracker what it was asked and what it answered.
It does so from a ``@run_soon`` task that stores the record in a durable queued
sender, so neither the tracker nor the disk ever slows the reply; the queued sender
delivers the record whenever the tracker is up, retrying with back-off for ever.

Service addresses come from the environment, ``FUN_FACTORY_<SERVICE>_URL``
(for example ``FUN_FACTORY_JOKER_URL=uds:///run/ff/joker.sock``), defaulting to
TCP ports 8901-8907 on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ecosys import (
    Application,
    Client,
    Reject,
    ResponseError,
    Status,
    TransportError,
    backoff,
    client_from_url,
    endpoint,
    queued_sender,
    run_soon,
    sender,
)

log = logging.getLogger("router")

DEFAULT_URLS = {
    "fortunes": "tcp://127.0.0.1:8901",
    "joker": "tcp://127.0.0.1:8902",
    "lottery": "tcp://127.0.0.1:8903",
    "magic_eight_ball": "tcp://127.0.0.1:8904",
    "time_reporter": "tcp://127.0.0.1:8905",
    "tracker": "tcp://127.0.0.1:8907",
}


def service_client(service: str, **options: Any) -> Client:
    """A persistent client for *service*, at the address its environment variable names."""
    url = os.environ.get(f"FUN_FACTORY_{service.upper()}_URL", DEFAULT_URLS[service])
    return client_from_url(url, **options)


# Services answer in microseconds; two seconds means something is wrong.
fortunes = service_client("fortunes", timeout=2.0)
joker = service_client("joker", timeout=2.0)
lottery = service_client("lottery", timeout=2.0)
eight_ball = service_client("magic_eight_ball", timeout=2.0)
time_reporter = service_client("time_reporter", timeout=2.0)
# No client-level retries: the queued sender below retries, with its own back-off.
tracker = service_client("tracker", timeout=5.0, retries=0)


class Ask(BaseModel):
    """What a Fun Factory client asks for."""

    topic: Literal["fortune", "joke", "lottery", "eight_ball", "time"]
    text: str | None = Field(None, max_length=500)


class Answer(BaseModel):
    """What it gets back: which service answered, and the answer as one line of text."""

    topic: str
    service: str
    text: str


@sender(fortunes, "fortunes.tell")
def tell_fortune(name: str | None) -> dict[str, Any]:
    """Ask the fortune teller."""
    return {"name": name}


@sender(joker, "joker.tell")
def tell_joke() -> dict[str, Any]:
    """Ask the joker."""
    return {}


@sender(lottery, "lottery.draw")
def draw_numbers() -> dict[str, Any]:
    """Draw six numbers from 49."""
    return {"count": 6, "highest": 49}


@sender(eight_ball, "magic_eight_ball.ask")
def shake_ball(question: str | None) -> dict[str, Any]:
    """Ask the magic eight ball (it insists on a question)."""
    return {"question": question or ""}


@sender(time_reporter, "time_reporter.now")
def report_time(timezone: str | None) -> dict[str, Any]:
    """Ask for the time in a zone."""
    return {"timezone": timezone or "UTC"}


async def fortune_text(ask: Ask) -> str:
    """A fortune, as text."""
    return str((await tell_fortune(ask.text))["fortune"])


async def joke_text(ask: Ask) -> str:
    """A joke, as text."""
    joke = await tell_joke()
    return f"{joke['setup']} {joke['punchline']}"


async def lottery_text(ask: Ask) -> str:
    """The numbers drawn, as text."""
    numbers = (await draw_numbers())["numbers"]
    return "Your numbers: " + " ".join(str(n) for n in numbers)


async def eight_ball_text(ask: Ask) -> str:
    """The eight ball's answer."""
    return str((await shake_ball(ask.text))["answer"])


async def time_text(ask: Ask) -> str:
    """The time, spoken."""
    return str((await report_time(ask.text))["spoken"])


ROUTES: dict[str, tuple[str, Callable[[Ask], Awaitable[str]]]] = {
    "fortune": ("fortunes", fortune_text),
    "joke": ("joker", joke_text),
    "lottery": ("lottery", lottery_text),
    "eight_ball": ("magic_eight_ball", eight_ball_text),
    "time": ("time_reporter", time_text),
}


@queued_sender(tracker, "tracker.track", name="to_tracker", max_retries=None,
               backoff=backoff.exponential(base=0.1, factor=2.0, cap=1.0))
def to_tracker(record: dict[str, Any]) -> dict[str, Any]:
    """Store a tracking record; the queued sender delivers it to the tracker."""
    return record


@run_soon
async def notify_tracker(record: dict[str, Any]) -> None:
    """Queue the record for the tracker in the background (the uid of the request comes along)."""
    await to_tracker(record)


@endpoint("router.ask")
async def ask(request: Ask) -> Answer:
    """Send the question to the service for its topic, answer, then tell the tracker."""
    received_at = time.time()
    service, fetch = ROUTES[request.topic]
    record: dict[str, Any] = {"topic": request.topic, "request": request.model_dump(),
                              "received_at": received_at}
    try:
        text = await fetch(request)
    except ResponseError as exc:
        # The caller's text was invalid (300) or the service was busy (500): say so.
        # Anything else is the service's fault, not the caller's: 600.
        passed_on = (Status.VALIDATION_ERROR, Status.APPLICATION_BUSY)
        status = exc.status if exc.status in passed_on else Status.PROCESSING_FAILURE
        message = f"{service}: {exc.message}"
        notify_tracker({**record, "status": status, "response": {"error": message},
                        "answered_at": time.time()})
        log.info("%s answered status %d: %s", service, exc.status, exc.message)
        raise Reject(status, message) from exc
    except TransportError as exc:
        message = f"{service} is unavailable: {exc}"
        notify_tracker({**record, "status": int(Status.APPLICATION_BUSY), "response": {"error": message},
                        "answered_at": time.time()})
        log.warning("%s", message)
        raise Reject(Status.APPLICATION_BUSY, message) from exc
    answer = Answer(topic=request.topic, service=service, text=text)
    notify_tracker({**record, "status": 0, "response": answer.model_dump(),
                    "answered_at": time.time()})
    log.info("%s answered %s", service, request.topic)
    return answer


if __name__ == "__main__":
    Application("router").run()
