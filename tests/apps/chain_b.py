"""Last service of the tracking chain: ``whoami`` logs and returns the uid it was called with.

Run:  python tests/apps/chain_b.py -i 1 --tcp 127.0.0.1:PORT
"""

import logging

from pydantic import BaseModel

from ecosys import Application, endpoint

log = logging.getLogger("chain_b")


class Note(BaseModel):
    """What A passes on."""

    note: str


class Seen(BaseModel):
    """What B saw."""

    uid: str
    note: str


@endpoint("whoami")
async def whoami(request: Note, uid: str) -> Seen:
    """Log the request and tell the caller which uid arrived here."""
    log.info("chain B handling note %r", request.note)
    return Seen(uid=uid, note=request.note)


if __name__ == "__main__":
    Application().run()
