"""The tracker: a queued endpoint that records every request and response it is told about.

Run it:  ECOENV_QUEUE_DIR=/tmp/ff python examples/fun_factory/tracker.py -i 0 --tcp 127.0.0.1:8907

- ``tracker.track`` (queued) takes one record per message the router answered: the
  message uid, topic, the request the client sent, the status and data of the answer,
  and when the router received and answered it. It is acknowledged as soon as it is on
  disk in the tracker's queue; the worker then writes it into the tracker database.
- ``tracker.count`` ``{}`` -> ``{"tracked": 1234, "duplicates": 2, "database": "..."}``.

The database is SQLite, at the path in the ``TRACKER_DB`` extra setting
(``--extra TRACKER_DB=/path/db.sqlite``), by default ``<default_dir>/tracker-<instance>.sqlite``.

Delivery into a queued endpoint is at-least-once: after a crash, a record may arrive a
second time (the router's sender did not see the acknowledgement, or the tracker died
between writing the row and removing the queue entry). The table's primary key is the
message uid and rows are inserted with ``INSERT OR IGNORE``, so a repeat changes nothing;
repeats are counted in the ``tracker.duplicates`` statistic.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ecosys import Application, current_app, endpoint, queued_endpoint, stats

log = logging.getLogger("tracker")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    uid TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    request TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    received_at REAL NOT NULL,
    answered_at REAL NOT NULL,
    tracked_at REAL NOT NULL
)
"""


class Track(BaseModel):
    """What the router tells the tracker about one message."""

    topic: str = Field(max_length=64)
    request: dict[str, Any]
    status: int
    response: Any = None
    received_at: float
    answered_at: float


class TrackerDatabase:
    """The tracker's SQLite file, written from one worker thread so the event loop never waits on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(SCHEMA)
            self._db = db
        return self._db

    def _insert(self, uid: str, record: Track) -> bool:
        with self._lock:
            db = self._connect()
            cursor = db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, record.topic, orjson.dumps(record.request).decode(), record.status,
                 orjson.dumps(record.response).decode(), record.received_at,
                 record.answered_at, time.time()),
            )
            return cursor.rowcount == 1

    def _count(self) -> int:
        with self._lock:
            row = self._connect().execute("SELECT COUNT(*) FROM messages").fetchone()
            return int(row[0])

    async def insert(self, uid: str, record: Track) -> bool:
        """Store one record; False when its uid was already there."""
        return await asyncio.to_thread(self._insert, uid, record)

    async def count(self) -> int:
        """How many messages are recorded."""
        return await asyncio.to_thread(self._count)


_database: TrackerDatabase | None = None


def database() -> TrackerDatabase:
    """The database of the running application (opened on first use)."""
    global _database
    if _database is None:
        config = current_app().config
        assert config is not None, "the tracker runs inside an Application"
        configured = config.extra.get("TRACKER_DB")
        path = Path(configured) if configured else config.default_dir / f"tracker-{config.instance}.sqlite"
        _database = TrackerDatabase(path)
        log.info("tracking into %s", path)
    return _database


@queued_endpoint("tracker.track", max_retries=5, retry_delay=0.5)
async def track(record: Track, uid: str) -> bool:
    """Write the record under its message uid; a repeat delivery is recognised and ignored."""
    if await database().insert(uid, record):
        stats.increment("tracker.tracked")
        log.info("tracked %s answer to %s (status %d)", record.topic, uid, record.status)
    else:
        stats.increment("tracker.duplicates")
        log.info("already tracked %s: repeat delivery ignored", uid)
    return True


@endpoint("tracker.count")
async def count() -> dict[str, Any]:
    """How many messages are in the database, and how many repeats were ignored since start."""
    db = database()
    return {"tracked": await db.count(), "duplicates": stats.get("tracker.duplicates", 0),
            "database": str(db.path)}


if __name__ == "__main__":
    Application("tracker").run()
