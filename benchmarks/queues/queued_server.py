"""A queued endpoint "store" whose handler returns True at once.

Started by run.py as:  queued_server.py -i bench --uds PATH --event_loop KIND, with
ECOENV_QUEUE_DIR and ECOENV_DEFAULT_DIR set to a temporary directory and
QBENCH_MAX_UNCOMMITTED to the max_uncommitted of the queue (read before the
decorator runs). stdin is a pipe from run.py; see parent_watch.
"""

from __future__ import annotations

import os
from typing import Any

from models import Order
from parent_watch import stop_when_parent_exits

from ecosys import Application, QueuedEndpoint, default_registry, endpoint, queued_endpoint

MAX_UNCOMMITTED = int(os.environ.get("QBENCH_MAX_UNCOMMITTED", "0"))


@queued_endpoint("store", max_uncommitted=MAX_UNCOMMITTED)
async def store(request: Order) -> bool:
    """Done at the first attempt."""
    return True


@endpoint("bench_stats")
async def bench_stats() -> dict[str, Any]:
    """Commits and queue size of "store", for rows-per-commit figures and draining."""
    queue = default_registry.endpoints["store"]
    assert isinstance(queue, QueuedEndpoint)
    pair = queue.pair
    return {
        "commits": pair.pending.commits if pair else 0,
        "pending": pair.pending_count if pair else 0,
        "errors": pair.error_count if pair else 0,
        "max_uncommitted": MAX_UNCOMMITTED,
    }


if __name__ == "__main__":
    stop_when_parent_exits()
    Application(f"queued_mu{MAX_UNCOMMITTED}").run()
