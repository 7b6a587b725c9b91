"""Starts, watches and stops the Fun Factory's services as separate processes.

Used by ``run.py`` (the demo) and by the tests. Layout under one run directory::

    <run_dir>/sock/<service>.sock      each service listens on a Unix socket
    <run_dir>/<service>/               its default dir: log, lock file
    <run_dir>/<service>/queues/        its durable queues (router and tracker)
    <run_dir>/<service>/console.txt    what it printed (start-up banner, errors)
    <run_dir>/tracker.sqlite           the tracker's database

Every service runs with instance name ``demo``. On Linux each child is told to
receive SIGTERM if this process dies (even by SIGKILL), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecosys import Client, EcosysError, UdsClient

HERE = Path(__file__).resolve().parent
BACKENDS = ("fortunes", "joker", "lottery", "magic_eight_ball", "time_reporter")
SERVICES = (*BACKENDS, "tracker", "router")
INSTANCE = "demo"
START_TIMEOUT = 20.0
BANNER = " listening on "


class ServiceFailed(Exception):
    """A service did not start (or died); the message says which and why."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} failed to start: {reason}")
        self.service = service
        self.reason = reason


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclass
class Service:
    """One service of the system and its process."""

    name: str
    home: Path
    socket: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def console(self) -> Path:
        """Where its stdout and stderr go."""
        return self.home / "console.txt"

    @property
    def log(self) -> Path:
        """Its log file."""
        return self.home / f"{self.name}-{INSTANCE}.log"

    @property
    def url(self) -> str:
        """Its address."""
        return f"uds://{self.socket}"

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.returncode is None

    def console_tail(self, lines: int = 6) -> str:
        """The last lines it printed."""
        try:
            text = self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class FunFactory:
    """The whole system: seven service processes under *run_dir*."""

    def __init__(self, run_dir: Path, *, python: str = sys.executable) -> None:
        self.run_dir = run_dir
        self.python = python
        self.database = run_dir / "tracker.sqlite"
        self.services = {
            name: Service(name, run_dir / name, run_dir / "sock" / f"{name}.sock") for name in SERVICES
        }
        self._clients: dict[str, Client] = {}

    # ----- processes --------------------------------------------------------

    def _command(self, service: Service) -> list[str]:
        command = [self.python, str(HERE / f"{service.name}.py"), "-i", INSTANCE,
                   "--uds", str(service.socket)]
        if service.name == "tracker":
            command += ["--extra", f"TRACKER_DB={self.database}"]
        return command

    def _environment(self, service: Service) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECOENV_")}
        env.update(ECOENV_DEFAULT_DIR=str(service.home), ECOENV_QUEUE_DIR=str(service.home / "queues"),
                   PYTHONUNBUFFERED="1")
        for other in self.services.values():
            env[f"FUN_FACTORY_{other.name.upper()}_URL"] = other.url
        return env

    async def start_service(self, name: str) -> Service:
        """Start one service and wait until it listens; ServiceFailed if it does not."""
        service = self.services[name]
        if service.running:
            raise RuntimeError(f"{name} is already running")
        service.home.mkdir(parents=True, exist_ok=True)
        service.socket.parent.mkdir(parents=True, exist_ok=True)
        offset = service.console.stat().st_size if service.console.exists() else 0
        with service.console.open("ab") as console:
            # Its own process group: a Ctrl-C in the terminal reaches only the demo,
            # which then stops the services in order.
            service.process = await asyncio.create_subprocess_exec(
                *self._command(service), env=self._environment(service), cwd=service.home,
                stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
                preexec_fn=_die_with_parent, process_group=0,
            )
        service.starts += 1
        await self._wait_listening(service, offset)
        return service

    async def _wait_listening(self, service: Service, offset: int) -> None:
        """Wait for the start-up banner past *offset* in its console file."""
        assert service.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with service.console.open("rb") as console:  # a few hundred bytes at most
                console.seek(offset)
                text = console.read().decode(errors="replace")
            if BANNER in text:
                return
            if service.process.returncode is not None:
                reason = service.console_tail() or "no output"
                raise ServiceFailed(service.name, f"exit code {service.process.returncode}: {reason}")
            if time.monotonic() > deadline:
                raise ServiceFailed(service.name, f"not listening after {START_TIMEOUT:.0f} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(service.process.wait()), 0.05)

    async def start(self) -> None:
        """Start every service at once; if one fails, stop the others and raise ServiceFailed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        results = await asyncio.gather(*(self.start_service(name) for name in SERVICES),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would."""
        service = self.services[name]
        if service.running:
            assert service.process is not None
            service.process.kill()

    async def stop_service(self, name: str, grace: float = 15.0) -> int | None:
        """SIGTERM one service, SIGKILL it after *grace* seconds; its exit code."""
        service = self.services[name]
        process = service.process
        client = self._clients.pop(name, None)
        if client is not None:
            await client.close()  # our own connection must not hold up its drain
        if process is None:
            return None
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode

    async def stop(self, grace: float = 15.0) -> dict[str, int | None]:
        """Stop the router first (no new work), then everything else; exit code per service."""
        codes = {"router": await self.stop_service("router", grace)}
        rest = [name for name in SERVICES if name != "router"]
        for name, code in zip(rest, await asyncio.gather(*(self.stop_service(n, grace) for n in rest)),
                              strict=True):
            codes[name] = code
        return codes

    def pids(self) -> dict[str, int]:
        """The process id of every service started so far (the latest start of each)."""
        return {name: s.process.pid for name, s in self.services.items() if s.process is not None}

    # ----- talking to the services -------------------------------------------

    @property
    def router_url(self) -> str:
        """Where clients send their messages."""
        return self.services["router"].url

    def client(self, name: str) -> Client:
        """A persistent client for one service (kept until the service stops)."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = UdsClient(str(self.services[name].socket), timeout=2.0, retries=0)
        return client

    async def call(self, name: str, route_key: str, data: Any = None) -> Any:
        """One request to one service; None if it is down or fails."""
        if not self.services[name].running:
            return None
        try:
            return await self.client(name).request(route_key, data)
        except EcosysError:
            return None

    async def statistics(self) -> dict[str, Any]:
        """eco.statistics.get of every service (None for a service that does not answer)."""
        answers = await asyncio.gather(*(self.call(n, "eco.statistics.get") for n in SERVICES))
        return dict(zip(SERVICES, answers, strict=True))

    async def wait_drained(self, timeout: float = 30.0) -> bool:
        """Wait until the router has delivered every tracking record and the tracker has written them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sender = await self.call("router", "eco.queued_sender.data",
                                     {"queue_route_key": "to_tracker"})
            handler = await self.call("tracker", "eco.queued_handler.data",
                                      {"queue_route_key": "tracker.track"})
            if (sender is not None and handler is not None and sender["pending"] == 0
                    and sender["in_flight"] == 0 and handler["pending"] == 0):
                return True
            await asyncio.sleep(0.1)
        return False

    # ----- the tracker's database -------------------------------------------

    def _read_tracked(self) -> list[str]:
        if not self.database.exists():
            return []
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT uid FROM messages")]
        finally:
            db.close()

    async def tracked_uids(self) -> list[str]:
        """Every uid in the tracker's database (read off the event loop)."""
        return await asyncio.to_thread(self._read_tracked)
