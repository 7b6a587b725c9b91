"""Queue files in the queue directory that no queue of the running application opens.

A queued endpoint or sender that was renamed or removed (or a broadcaster
target whose key changed) leaves its files behind, with whatever was still
pending in them. Nothing would ever process those entries, so the start-up
says so instead of staying silent.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

QUEUE_FILE_SUFFIXES = ("-pending.sqlite", "-error.sqlite")


def stranded_queue_files(queue_dir: Path, prefix: str, opened: set[Path]) -> list[tuple[Path, int]]:
    """(file, entries) for each non-empty queue file of *prefix* that is not in *opened*.

    Blocking (directory listing, SQLite reads): run it off the event loop.
    """
    stranded: list[tuple[Path, int]] = []
    if not queue_dir.is_dir():
        return stranded
    for path in sorted(queue_dir.glob(f"{prefix}-*.sqlite")):
        if path in opened or not path.name.endswith(QUEUE_FILE_SUFFIXES):
            continue
        try:
            # Read-only and without creating anything: the file belongs to nobody here.
            # (closing(): a connection's own "with" ends a transaction, not the connection.)
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                count = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        except sqlite3.Error:
            continue  # not one of ours after all, or unreadable: not for this warning
        if count:
            stranded.append((path, int(count)))
    return stranded
