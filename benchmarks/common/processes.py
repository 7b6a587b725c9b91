"""Stopping benchmark server processes, shared by every benchmark."""

from __future__ import annotations

import subprocess

STOP_TIMEOUT = 10.0


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it does not exit within *timeout*; close its stdin pipe."""
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        if process.stdin is not None:
            process.stdin.close()
