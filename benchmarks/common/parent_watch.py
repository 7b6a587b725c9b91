"""Lets a benchmark server stop by itself when the process that started it is gone."""

from __future__ import annotations

import os
import signal
import sys
import threading


def stop_when_parent_exits() -> None:
    """Send SIGTERM to this process once stdin (a pipe from the parent) reaches EOF.

    The parent never writes to the pipe; the kernel closes it when the parent
    dies, even by SIGKILL, so a server is never left running on its own.
    """

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
