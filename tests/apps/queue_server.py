"""A queued endpoint for crash tests.

"test.fail_commits" makes the queue's commits fail from then on, as on a full disk.

config.extra: RECORD (file the handler appends "<n>\\n" to once it is done with
request n), MODE ("record", or "hang": write "start <n>" and sleep for ever),
MAX_UNCOMMITTED (the queue's batching setting).
"""

import asyncio
import os

from pydantic import BaseModel

from ecosys import Application, QueuedEndpoint, current_app, default_registry, endpoint, queued_endpoint


class Work(BaseModel):
    n: int


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


@queued_endpoint("work", max_uncommitted=int(os.environ.get("QUEUE_MAX_UNCOMMITTED", "0")),
                 commit_interval=float(os.environ.get("QUEUE_COMMIT_INTERVAL", "0.05")),
                 max_retries=int(os.environ.get("QUEUE_MAX_RETRIES", "3")))
async def work(request: Work) -> bool:
    """Record the request, or hang on it, as the test asks."""
    extra = current_app().config.extra  # type: ignore[union-attr]
    if extra.get("MODE") == "hang":
        await asyncio.to_thread(_append, extra["RECORD"], f"start {request.n}\n")
        await asyncio.sleep(3600)
    await asyncio.to_thread(_append, extra["RECORD"], f"{request.n}\n")
    return True


@endpoint("test.fail_commits")
async def fail_commits() -> None:
    """Make every later commit of "work" fail as on a full disk (for the stop-status test)."""
    queue = default_registry.endpoints["work"]
    assert isinstance(queue, QueuedEndpoint) and queue.pair is not None

    def disk_full(batch: object) -> None:
        raise OSError(28, "No space left on device")

    queue.pair.pending._apply_sync = disk_full  # type: ignore[method-assign]


if __name__ == "__main__":
    Application().run()
