"""The lottery: draws distinct numbers, like a ball machine.

Run it:  python examples/fun_factory/lottery.py -i 0 --tcp 127.0.0.1:8903

- ``lottery.draw`` ``{"count": 6, "highest": 49}`` -> ``{"numbers": [3, 11, 19, 27, 40, 44]}``
  (sorted, no repeats; ``count`` may not exceed ``highest``: that is answered with status 300).
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel, Field, model_validator

from ecosys import Application, endpoint

log = logging.getLogger("lottery")


class Draw(BaseModel):
    """How many balls, numbered 1 to highest."""

    count: int = Field(6, ge=1, le=20)
    highest: int = Field(49, ge=1, le=1000)

    @model_validator(mode="after")
    def enough_balls(self) -> Draw:
        """A draw takes distinct balls, so there must be enough of them."""
        if self.count > self.highest:
            raise ValueError(f"cannot draw {self.count} distinct numbers from 1..{self.highest}")
        return self


class Drawn(BaseModel):
    """The numbers drawn, in ascending order."""

    numbers: list[int]


@endpoint("lottery.draw")
async def draw(request: Draw) -> Drawn:
    """Draw request.count distinct numbers from 1..request.highest."""
    numbers = sorted(random.sample(range(1, request.highest + 1), request.count))
    log.info("drew %s", numbers)
    return Drawn(numbers=numbers)


if __name__ == "__main__":
    Application("lottery").run()
