"""The joker: one endpoint that tells a joke, set-up and punchline.

Run it:  python examples/fun_factory/joker.py -i 0 --tcp 127.0.0.1:8902

- ``joker.tell`` ``{}`` -> ``{"setup": "...", "punchline": "..."}``
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel
from texts import JOKES

from ecosys import Application, endpoint

log = logging.getLogger("joker")


class Joke(BaseModel):
    """A joke in two parts."""

    setup: str
    punchline: str


@endpoint("joker.tell")
async def tell() -> Joke:
    """Pick a joke at random."""
    setup, punchline = random.choice(JOKES)
    log.info("told a joke: %s", setup)
    return Joke(setup=setup, punchline=punchline)


if __name__ == "__main__":
    Application("joker").run()
