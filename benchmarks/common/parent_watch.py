"""Lets a benchmark server stop by itself when the process that started it is gone."""

from __future__ import annotations

import os
import signal
import threading


def stop_when_parent_exits() -> None:
    """Send SIGTERM to this process once stdin (a pipe from the parent) reaches EOF.

    The parent never writes to the pipe; the kernel closes it when the parent
    dies, even by SIGKILL, so a server is never left running on its own.
    """

    def watch() -> None:
        # os.read, not sys.stdin: at interpreter shutdown this daemon thread may
        # still be blocked reading, and a buffered reader's lock held by it makes
        # the shutdown abort ("could not acquire lock for <stdin>").
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
