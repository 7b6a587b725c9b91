"""Starting, probing and stopping the benchmark's server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

COMMON_DIR = Path(__file__).resolve().parent.parent / "common"
# Helpers shared by every benchmark (this one runs as a script from its own folder).
sys.path.insert(0, str(COMMON_DIR))
from processes import stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Addresses:
    """Where one server listens."""

    host: str
    port: int  # the same number for TCP and UDP
    uds: str


def free_port(host: str = HOST) -> int:
    """A port number free for both TCP and UDP on *host* right now."""
    while True:
        with socket.socket() as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        return port


class ServerProcess:
    """One server in its own process, output to a log file, stopped on :meth:`stop`."""

    def __init__(
        self, name: str, script: str, loop: str, run_dir: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.addresses = Addresses(HOST, free_port(), str(run_dir / f"{name}.sock"))
        self.log_path = run_dir / f"{name}.out"
        a = self.addresses
        self.command = [
            sys.executable, str(HERE / script), *args,
            "--tcp", f"{a.host}:{a.port}", "--udp", f"{a.host}:{a.port}", "--uds", a.uds,
            "--event_loop", loop,
        ]
        # Only the run directory comes from the environment: ECOENV_* settings of
        # the caller would make runs differ between machines.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ECOENV_")}
        self.env["ECOENV_DEFAULT_DIR"] = str(run_dir)
        # Helpers shared by every benchmark's servers (parent_watch) live in benchmarks/common.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(COMMON_DIR), self.env.get("PYTHONPATH", "")) if p
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until its TCP and UDS sockets accept connections."""
        with open(self.log_path, "wb") as log:
            # stdin is a pipe that is never written: its EOF tells the server we are gone.
            self.process = subprocess.Popen(
                self.command, env=self.env,
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not (self._accepts_tcp() and self._accepts_uds()):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not ready after {READY_TIMEOUT:g}s:\n{self.output()}"
                )
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def responsive(self) -> bool:
        """True while the process runs and its TCP and UDS sockets accept connections."""
        return self.alive and self._accepts_tcp() and self._accepts_uds()

    def _accepts_tcp(self) -> bool:
        try:
            socket.create_connection((self.addresses.host, self.addresses.port), timeout=1).close()
        except OSError:
            return False
        return True

    def _accepts_uds(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(self.addresses.uds)
            except OSError:
                return False
        return True

    def output(self) -> str:
        """What the server printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; safe to call twice."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT)
