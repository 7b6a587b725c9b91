"""Middle service of the tracking chain: ``forward`` asks B (through a @sender) and returns B's answer.

B's TCP port comes from configuration: ``ECOENV_EXTRA_CHAIN_A_<INSTANCE>_B_PORT``.

Run:  python tests/apps/chain_a.py -i 1 --tcp 127.0.0.1:PORT
"""

import logging
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from ecosys import Application, TcpClient, current_app, endpoint, get_uid, sender

log = logging.getLogger("chain_a")


class Note(BaseModel):
    """The request of ``forward`` and of B's ``whoami``."""

    note: str


class Seen(BaseModel):
    """B's answer."""

    uid: str
    note: str


class Forwarded(BaseModel):
    """A's answer: the uid A handled and what B saw."""

    a_uid: str | None
    b: Seen


_ask_b: Callable[[str], Awaitable[Seen]] | None = None


def ask_b() -> Callable[[str], Awaitable[Seen]]:
    """The @sender to B, built on first use (B's port is only known once configured)."""
    global _ask_b
    if _ask_b is None:
        port = int(current_app().config.extra["B_PORT"])
        client = TcpClient("127.0.0.1", port, timeout=5.0)

        @sender(client, "whoami", Seen)
        def whoami(note: str) -> Note:
            return Note(note=note)

        _ask_b = whoami
    return _ask_b


@endpoint("forward")
async def forward(request: Note) -> Forwarded:
    """Log, pass the note on to B and return what B saw."""
    log.info("chain A forwarding note %r to B", request.note)
    seen = await ask_b()(request.note)
    return Forwarded(a_uid=get_uid(), b=seen)


if __name__ == "__main__":
    Application().run()
