"""Stop a benchmark server by itself once the process that started it is gone."""

from __future__ import annotations

import os
import signal
import sys
import threading


def stop_when_parent_exits() -> None:
    """SIGTERM this process when stdin (a pipe the parent never writes to) reaches EOF.

    The kernel closes the pipe when the parent dies, even by SIGKILL, so no
    server outlives the benchmark run that started it.
    """

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
