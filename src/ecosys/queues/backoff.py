"""Back-off policies: how long a queued sender waits before attempt n+1 (n starts at 1)."""

from __future__ import annotations

import random
from collections.abc import Callable

Backoff = Callable[[int], float]


def constant(delay: float = 1.0) -> Backoff:
    """Always wait *delay* seconds."""
    if delay < 0:
        raise ValueError("delay must be >= 0")
    return lambda attempt: delay


def exponential(base: float = 0.5, factor: float = 2.0, cap: float = 30.0, jitter: float = 0.1) -> Backoff:
    """Wait base * factor**(attempt-1) seconds, at most *cap*, spread by ±*jitter* (a fraction)."""
    if base < 0 or factor < 1 or cap < 0 or not 0 <= jitter <= 1:
        raise ValueError("need base >= 0, factor >= 1, cap >= 0 and 0 <= jitter <= 1")

    def delay(attempt: int) -> float:
        value = min(cap, base * factor ** max(0, attempt - 1))
        # Jitter keeps many senders that failed together from retrying in lockstep.
        return max(0.0, value * (1 + random.uniform(-jitter, jitter)))

    return delay
