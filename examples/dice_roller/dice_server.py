"""The dice roller: two plain endpoints and one queued endpoint.

Run it:

    ECOENV_QUEUE_DIR=/tmp/dice python examples/dice_roller/dice_server.py -i 0 --tcp 127.0.0.1:8800

then, in another shell:

    python examples/dice_roller/dice_client.py tcp://127.0.0.1:8800

Endpoints:

- ``roll``  ``{"sides": 6}`` -> ``{"value": 4}``
- ``guess`` ``{"sides": 6, "guess": 3}`` -> ``{"rolled": 5, "correct": false}``
- ``roll_times`` (queued) ``{"times": 50, "sides": 6}`` -> ``{"uid": "..."}`` at once; the rolls
  happen later in the background and their result goes to the log file
  (``$ECOENV_DEFAULT_DIR/dice_server-0.log``, by default under the system temp directory).

The queued handler is deliberately moody, so that the retry and error queues have
something to show:

- if the first roll is a 1 it returns False ("unlucky, try again later"): the request is
  handled again after ``retry_delay`` seconds, at most ``max_retries`` more times;
- if more than 100 rolls were asked for and one of them is a 1, it raises with a chance of
  FUMBLE_CHANCE (default 0.5; set it with ``--extra FUMBLE_CHANCE=1``): the request goes
  to the error queue, where the ``eco.queued_handler.errors.*`` endpoints can look at it,
  reprocess it or drop it.
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel, Field

from ecosys import Application, current_app, endpoint, queued_endpoint, stats

log = logging.getLogger("dice_server")


class Roll(BaseModel):
    """A request to roll one die."""

    sides: int = Field(6, ge=2)


class Rolled(BaseModel):
    """The face that came up."""

    value: int


class Guess(BaseModel):
    """Guess the next roll."""

    sides: int = Field(6, ge=2)
    guess: int = Field(ge=1)


class GuessResult(BaseModel):
    """What was rolled and whether the guess was right."""

    rolled: int
    correct: bool


class RollTimes(BaseModel):
    """Roll a die many times (handled in the background)."""

    times: int = Field(ge=1, le=1000)
    sides: int = Field(6, ge=2)


class DiceFellOffTheTable(Exception):
    """A big batch of rolls went wrong; the request lands in the error queue."""


def roll_die(sides: int) -> int:
    """One fair roll of a die with *sides* faces."""
    return random.randint(1, sides)


@endpoint("roll")
async def roll(request: Roll) -> Rolled:
    """Roll one die and answer with its value."""
    return Rolled(value=roll_die(request.sides))


@endpoint("guess")
async def guess(request: Guess) -> GuessResult:
    """Roll one die and tell whether the caller guessed it."""
    value = roll_die(request.sides)
    return GuessResult(rolled=value, correct=value == request.guess)


def fumble_chance() -> float:
    """How likely a big batch containing a 1 fails (config.extra FUMBLE_CHANCE)."""
    config = current_app().config
    raw = config.extra.get("FUMBLE_CHANCE", 0.5) if config is not None else 0.5
    return min(1.0, max(0.0, float(raw)))


@queued_endpoint("roll_times", max_retries=3, retry_delay=0.5)
async def roll_times(request: RollTimes) -> bool:
    """Roll the die request.times times and log the outcome.

    True: done. False: try again later. An exception: straight to the error queue.
    """
    rolls = [roll_die(request.sides) for _ in range(request.times)]
    if rolls[0] == 1:
        log.info("first of %d rolls of a d%d was a 1: unlucky, try again later",
                 request.times, request.sides)
        return False
    if request.times > 100 and 1 in rolls and random.random() < fumble_chance():
        raise DiceFellOffTheTable(f"a die fell off the table during roll {rolls.index(1) + 1} "
                                  f"of {request.times}")
    total = sum(rolls)
    stats.increment("dice.rolls", request.times)
    log.info("rolled a d%d %d times: total %d, mean %.2f, max %d",
             request.sides, request.times, total, total / request.times, max(rolls))
    return True


if __name__ == "__main__":
    Application().run()
