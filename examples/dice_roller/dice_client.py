"""A client for the dice roller: typed calls with @sender, then a tour of the queue endpoints.

Run it (with dice_server.py running):

    python examples/dice_roller/dice_client.py [tcp://127.0.0.1:8800]

It rolls and guesses through two @sender functions, queues a batch of roll_times
requests, waits until the server has worked through them and then shows the queue
with the standard endpoints: eco.queued_handler.data, errors.get_first_10,
errors.inspect_request and errors.reprocess.all.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from pydantic import BaseModel

from ecosys import (
    Client,
    ResponseError,
    TransportError,
    ValidationFailed,
    client_from_url,
    new_uid,
    sender,
)

URL = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8800"
QUEUE = {"queue_route_key": "roll_times"}
SETTLE_TIMEOUT = 30.0

client: Client = client_from_url(URL, timeout=5.0)


# The client has its own models: services share JSON shapes, not code.
class Roll(BaseModel):
    sides: int = 6


class Rolled(BaseModel):
    value: int


class Guess(BaseModel):
    sides: int = 6
    guess: int


class GuessResult(BaseModel):
    rolled: int
    correct: bool


class Ack(BaseModel):
    uid: str


@sender(client, "roll", Rolled)
def roll(sides: int = 6) -> Roll:
    """Calling roll(20) sends {"sides": 20} to "roll" and returns a Rolled."""
    return Roll(sides=sides)


@sender(client, "guess", GuessResult)
def guess(number: int, sides: int = 6) -> Guess:
    """Guess the next roll."""
    return Guess(sides=sides, guess=number)


@sender(client, "roll_times", Ack)
def roll_times(times: int, sides: int = 6) -> dict[str, int]:
    """Queue a batch of rolls; the answer is only the acknowledgement {"uid": ...}."""
    return {"times": times, "sides": sides}


def show(title: str, value: Any) -> None:
    """Print a title and an indented JSON value."""
    print(f"{title}:")
    for line in json.dumps(value, indent=2, sort_keys=True).splitlines():
        print(f"    {line}")


def describe_error(entry: dict[str, Any]) -> str:
    """One line for an error queue entry."""
    request = entry["request"]
    return (f"{entry['uid'][:8]}  times={request['times']:<4} sides={request['sides']:<3} "
            f"attempts={entry['attempts']}  reason: {entry['reason']}")


async def queue_data() -> dict[str, Any]:
    data: dict[str, Any] = await client.request("eco.queued_handler.data", QUEUE)
    return data


async def wait_until_settled() -> dict[str, Any]:
    """Poll eco.queued_handler.data until nothing is pending (retries included)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        data = await queue_data()
        if data["pending"] == 0 or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.2)


async def plain_calls() -> None:
    print("== plain endpoints, called through @sender ==")
    for sides in (6, 6, 20):
        rolled = await roll(sides)
        print(f"roll d{sides}: {rolled.value}")
    result = await guess(3)
    verdict = "right" if result.correct else "wrong"
    print(f"guess 3 on a d6: rolled {result.rolled}, the guess was {verdict}")
    try:
        await roll(1)
    except ValidationFailed as exc:
        problems = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in exc.details or [])
        print(f"roll d1 refused with status {exc.status}: {exc.message} ({problems})")


async def queued_calls() -> None:
    print()
    print("== queued endpoint roll_times ==")
    batch = [1, 3, 10, 25, 50, 80, 100] + [120, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000] * 2
    acks = [await roll_times(times) for times in batch]
    print(f"queued {len(acks)} roll_times requests; each was acknowledged with its uid, "
          f"e.g. {json.dumps(acks[0].model_dump())}")
    data = await wait_until_settled()
    show("eco.queued_handler.data once the batch is worked through", data)

    print()
    errors = await client.request("eco.queued_handler.errors.get_first_10", QUEUE)
    print(f"eco.queued_handler.errors.get_first_10: {len(errors)} of {data['errors']} error(s) shown")
    for entry in errors:
        print(f"    {describe_error(entry)}")
    if errors:
        entry = await client.request("eco.queued_handler.errors.inspect_request",
                                     {**QUEUE, "request_uid": errors[0]["uid"]})
        show("eco.queued_handler.errors.inspect_request (the oldest one)", entry)

    # Asking about a uid that is not in the error queue is a status 300 answer, not a crash.
    try:
        await client.request("eco.queued_handler.errors.inspect_request",
                             {**QUEUE, "request_uid": new_uid()})
    except ResponseError as exc:
        print(f"inspecting an unknown uid: status {exc.status}: {exc.message}")

    print()
    moved = await client.request("eco.queued_handler.errors.reprocess.all", QUEUE)
    print(f"eco.queued_handler.errors.reprocess.all: {moved}")
    data = await wait_until_settled()
    print(f"after reprocessing: pending={data['pending']} errors={data['errors']} "
          "(the dice stay moody: some may have failed again)")


async def main() -> int:
    try:
        await plain_calls()
        await queued_calls()
    except TransportError as exc:
        print(f"cannot talk to the dice server at {URL}: {exc}")
        return 1
    except ResponseError as exc:
        print(f"the dice server answered status {exc.status}: {exc.message}")
        return 1
    finally:
        await client.close()
    print()
    print("dice client done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
