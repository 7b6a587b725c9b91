"""The error state keeper: named conditions that are wrong right now, for operators to see.

An error state is raised when something goes wrong that someone should know
about (a downstream service unreachable, a disk nearly full) and cleared
when it is resolved; raising it again while raised only counts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("ecosys.error_states")


class ErrorStateKeeper:
    """Named error states with a description, a count and first/last times."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def raise_state(self, name: str, description: str = "") -> None:
        """Raise *name* (or count it again if already raised)."""
        now = time.time()
        state = self.states.get(name)
        if state is None:
            self.states[name] = {"description": description, "count": 1,
                                 "first_raised": now, "last_raised": now}
            log.warning("error state raised: %s: %s", name, description)
            return
        state["count"] += 1
        state["last_raised"] = now
        if description:
            state["description"] = description

    def is_raised(self, name: str) -> bool:
        """True while *name* is raised."""
        return name in self.states

    def clear(self, *names: str) -> list[str]:
        """Clear the given states; returns the ones that were raised."""
        cleared = [n for n in names if self.states.pop(n, None) is not None]
        for name in cleared:
            log.info("error state cleared: %s", name)
        return cleared

    def clear_all(self) -> list[str]:
        """Clear every state; returns their names."""
        return self.clear(*list(self.states))

    def get(self) -> dict[str, dict[str, Any]]:
        """A copy of every raised state."""
        return {name: dict(state) for name, state in sorted(self.states.items())}

    def reset(self) -> None:
        """Forget everything (tests call this between cases)."""
        self.states.clear()


error_states = ErrorStateKeeper()
