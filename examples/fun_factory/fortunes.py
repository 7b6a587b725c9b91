"""The fortune teller: one endpoint that tells a fortune.

Run it:  python examples/fun_factory/fortunes.py -i 0 --tcp 127.0.0.1:8901

- ``fortunes.tell`` ``{"name": "Ada"}`` -> ``{"fortune": "Ada: Your next retry will succeed."}``
  (``name`` is optional).
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel, Field
from texts import FORTUNES

from ecosys import Application, endpoint

log = logging.getLogger("fortunes")


class FortuneRequest(BaseModel):
    """Who the fortune is for (optional)."""

    name: str | None = Field(None, max_length=100)


class Fortune(BaseModel):
    """One fortune."""

    fortune: str


@endpoint("fortunes.tell")
async def tell(request: FortuneRequest) -> Fortune:
    """Pick a fortune at random."""
    fortune = random.choice(FORTUNES)
    log.info("told fortune %d of %d", FORTUNES.index(fortune) + 1, len(FORTUNES))
    return Fortune(fortune=f"{request.name}: {fortune}" if request.name else fortune)


if __name__ == "__main__":
    Application("fortunes").run()
