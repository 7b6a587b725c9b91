"""Starting, probing and stopping the benchmark's ecosys server processes (UDS only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

COMMON_DIR = Path(__file__).resolve().parent.parent / "common"
# Helpers shared by every benchmark (this one runs as a script from its own folder).
sys.path.insert(0, str(COMMON_DIR))
from processes import stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServerProcess:
    """One ecosys Application in its own process, output to a log file, stopped by :meth:`stop`.

    Every process gets its own ECOENV_DEFAULT_DIR and ECOENV_QUEUE_DIR under
    *data_dir*, so queue files, lock and log never collide between processes.
    """

    def __init__(
        self, name: str, script: str, loop: str, data_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.dir = data_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.uds = str(self.dir / "app.sock")
        self.log_path = self.dir / "stdout.txt"
        self.command = [
            sys.executable, str(HERE / script), "-i", "bench", "--uds", self.uds,
            "--event_loop", loop,
        ]
        # ECOENV_* settings of the caller would make runs differ between machines: drop them.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ECOENV_")}
        self.env["ECOENV_DEFAULT_DIR"] = str(self.dir)
        self.env["ECOENV_QUEUE_DIR"] = str(self.dir / "queues")
        # Helpers shared by every benchmark's servers (parent_watch) live in benchmarks/common.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(COMMON_DIR), self.env.get("PYTHONPATH", "")) if p
        )
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the process; return once its Unix socket accepts connections."""
        with open(self.log_path, "wb") as log:
            # stdin: a pipe never written to; its EOF tells the server we are gone.
            self.process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        # Queues open before the servers start, so an accepting socket means ready.
        while not self.accepts():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:g}s:\n{self.output()}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def accepts(self) -> bool:
        """True when the Unix socket accepts a connection."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(self.uds)
            except OSError:
                return False
        return True

    def output(self) -> str:
        """What the process printed so far, and the tail of its ecosys log."""
        parts = []
        for path in (self.log_path, *sorted(self.dir.glob("*.log"))):
            try:
                parts.append(path.read_text(errors="replace")[-4000:])
            except OSError:
                pass
        return "\n".join(parts)

    def terminate(self) -> None:
        """Send SIGTERM (if running); :meth:`stop` waits for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; safe to call twice."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT)


def stop_all(servers: list[ServerProcess]) -> None:
    """Stop every server: SIGTERM to all first, so they shut down in parallel."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()
