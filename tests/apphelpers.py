"""Helpers for the application-level tests: free ports, short directories, real app processes.

Nothing here is a fixture, so test modules import plain functions and classes
and stay independent of conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
SLOW_SERVER = APPS_DIR / "slow_server.py"

# Generous: a cold interpreter importing pydantic on a loaded 2-core box.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

# sun_path holds 108 bytes; keep a margin for the socket file name.
_UDS_DIR_MAX = 80


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def socket_friendly_dir(tmp_path: Path) -> Iterator[Path]:
    """*tmp_path*, or a short directory under /tmp when tmp_path is too long for a UDS path."""
    if len(str(tmp_path)) <= _UDS_DIR_MAX:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="eco", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


def app_env(**values: str | os.PathLike[str]) -> dict[str, str]:
    """The current environment without any ECOENV_* variable, plus *values*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOENV_")}
    env.update({k: str(v) for k, v in values.items()})
    return env


def run_app(
    script: Path, args: Sequence[str], env: Mapping[str, str], *, timeout: float = START_TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an application that is expected to exit by itself (e.g. a failing start)."""
    return subprocess.run(
        [sys.executable, str(script), *args], env=dict(env), capture_output=True, text=True,
        timeout=timeout, cwd=cwd,
    )


class AppProcess:
    """A running application: its stdout is read line by line with timeouts, stderr goes to a file.

    Use as a context manager: the process is killed on exit if it is still running.
    """

    def __init__(
        self, script: Path, args: Sequence[str], env: Mapping[str, str], log_dir: Path,
        *, label: str = "app",
    ) -> None:
        self.label = label
        self.stderr_path = log_dir / f"{label}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # closed in close()
        self.argv = [sys.executable, str(script), *args]
        self.proc = subprocess.Popen(
            self.argv, env=dict(env), stdout=subprocess.PIPE, stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        self._buffer = b""
        self.stdout_lines: list[str] = []
        self.banner: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        """Everything the process said so far, for assertion messages."""
        return (
            f"{self.label} {self.argv} (exit {self.proc.poll()})\n"
            f"--- stdout ---\n{''.join(self.stdout_lines)}{self._buffer.decode(errors='replace')}\n"
            f"--- stderr ---\n{self.stderr_text()}"
        )

    def read_line(self, timeout: float = START_TIMEOUT) -> str:
        """The next stdout line; fails the test if none comes within *timeout* seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no stdout line within {timeout}s from {self.describe()}")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"stdout closed before a full line: {self.describe()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode(errors="replace")
        self.stdout_lines.append(text + "\n")
        return text

    def wait_ready(self, timeout: float = START_TIMEOUT, *, probe_port: int | None = None) -> str:
        """Wait for the startup banner (printed once every server listens) and return it.

        With *probe_port*, also wait for one answered request on that TCP port: an
        answer proves the event loop is serving, so the start-up code (signal
        handlers included) has run to completion.
        """
        line = self.read_line(timeout)
        assert " listening on " in line, f"expected the startup banner, got {line!r}\n{self.describe()}"
        self.banner = line
        if probe_port is not None:
            answer = request_tcp(probe_port, "test.readiness.probe", timeout=timeout)
            assert answer.get("status") == 400, f"unexpected answer to the readiness probe: {answer}"
        return line

    def wait_for_output(self, needle: str, timeout: float = START_TIMEOUT) -> str:
        """Read stdout lines until one contains *needle*."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.01, deadline - time.monotonic()))
            if needle in line:
                return line

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.label} did not exit within {timeout}s: {self.describe()}") from None

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll *predicate* until it is true or *timeout* passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def connect_tcp(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def send_request(sock: socket.socket, route_key: str, data: Any = None, uid: str | None = None) -> None:
    """Write one request line on a connected stream socket."""
    request: dict[str, Any] = {"route_key": route_key, "data": data}
    if uid is not None:
        request["uid"] = uid
    sock.sendall(json.dumps(request).encode() + b"\n")


def read_response(sock: socket.socket, timeout: float = 10.0) -> dict[str, Any]:
    """Read one response line from a connected stream socket."""
    sock.settimeout(timeout)
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full response; got {buffer!r}")
        buffer += chunk
    response = json.loads(buffer)
    assert isinstance(response, dict), f"response is not an object: {buffer!r}"
    return response


def request_tcp(port: int, route_key: str, data: Any = None, uid: str | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
    """One transient request over TCP (connect, send, read one line, close)."""
    with connect_tcp(port, timeout) as sock:
        send_request(sock, route_key, data, uid)
        return read_response(sock, timeout)


def request_uds(path: Path, route_key: str, data: Any = None, timeout: float = 10.0) -> dict[str, Any]:
    """One transient request over a Unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        send_request(sock, route_key, data)
        return read_response(sock, timeout)
