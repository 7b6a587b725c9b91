"""A service whose "chatter" endpoint logs N lines of 200 characters (console-logging tests)."""

from __future__ import annotations

import logging

from ecosys import Application, endpoint

log = logging.getLogger("chatty")


@endpoint("chatter")
async def chatter(lines: int) -> int:
    """Log *lines* lines."""
    for number in range(lines):
        log.info("chatter %06d %s", number, "x" * 200)
    return lines


if __name__ == "__main__":
    Application("chatty").run()
