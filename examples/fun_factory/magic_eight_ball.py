"""The magic eight ball: answers yes-or-no questions, and only questions.

Run it:  python examples/fun_factory/magic_eight_ball.py -i 0 --tcp 127.0.0.1:8904

- ``magic_eight_ball.ask`` ``{"question": "Will it ship?"}`` -> ``{"answer": "It is certain."}``
- A question must end with "?": anything else is answered with status 300 (validation
  error), which the Fun Factory client sends now and then on purpose, so the demo shows
  errors travelling back through the router and into the tracker.
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel, Field
from texts import EIGHT_BALL_ANSWERS

from ecosys import Application, endpoint

log = logging.getLogger("magic_eight_ball")


class Question(BaseModel):
    """A yes-or-no question."""

    question: str = Field(min_length=2, max_length=500, pattern=r"\?\s*$")


class Answer(BaseModel):
    """The ball's answer."""

    answer: str


@endpoint("magic_eight_ball.ask")
async def ask(request: Question) -> Answer:
    """Shake the ball."""
    answer = random.choice(EIGHT_BALL_ANSWERS)
    log.info("asked %r: %s", request.question, answer)
    return Answer(answer=answer)


if __name__ == "__main__":
    Application("magic_eight_ball").run()
