"""The Application: configuration, single-instance lock, logging, servers, signals, shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import (
    LEVELLED_KEYS,
    Settings,
    check_instance,
    check_name,
    load_settings,
    to_snake_case,
)
from .errors import ConfigurationError, EcosysError
from .lock import InstanceLock
from .logs import LogSetup
from .queues.endpoint import QueuedEndpoint
from .queues.orphans import stranded_queue_files
from .routing import Registry, Router, default_registry
from .standard import standard_endpoints
from .tasks import TaskKeeper, default_task_keeper, use_task_keeper
from .telemetry import error_states, stats
from .transport.allow import Allowlist
from .transport.tcp import TcpServer
from .transport.udp import UdpServer
from .transport.uds import UdsServer

log = logging.getLogger("ecosys.app")

# Started and not yet stopped, in start order: stopping one gives current_app()
# and run_soon back to the one started before it, which is still running.
_running: list[Application] = []


def current_app() -> Application:
    """The application that is running in this process (the one started last, if several)."""
    if not _running:
        raise EcosysError("no ecosys Application is running")
    return _running[-1]


def _become_current(app: Application) -> None:
    _running.append(app)
    use_task_keeper(app.task_keeper)


def _leave_current(app: Application) -> None:
    if app in _running:
        _running.remove(app)
    use_task_keeper(_running[-1].task_keeper if _running else None)


def _os_reason(exc: OSError) -> str:
    """Why a bind failed, in words: uvloop's UDP error keeps the errno on its cause only."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
    return str(exc)


def default_name() -> str:
    """The program's basename (or the ``-m`` module's last part) in snake_case."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name.removesuffix(".__main__")
        base = module.rsplit(".", 1)[-1]
    else:
        base = Path(sys.argv[0] or "ecosys").stem
    name = to_snake_case(base) or "ecosys_app"
    # A program called e.g. "2fast.py" still gets a valid (identifier-like) name.
    return name if name[0].isalpha() else f"app_{name}"


class Application:
    """An ecosys service: ``Application().run()`` is a whole program.

    *config* holds values set in code (below environment, file and flags in
    precedence). *registry* defaults to the one ``@endpoint`` fills.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        instance: str | None = None,
        config: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
        task_keeper: TaskKeeper | None = None,
    ) -> None:
        self.name = check_name(name if name is not None else default_name())
        self.instance = check_instance(instance) if instance is not None else None
        self.code_config = dict(config or {})
        self.registry = registry if registry is not None else default_registry
        self.task_keeper = task_keeper if task_keeper is not None else default_task_keeper
        self.config: Settings | None = None
        self.router = self.build_router()
        self.servers: list[Any] = []
        self._open_queue_list: list[Any] = []
        self._lock: InstanceLock | None = None
        self._logs: LogSetup | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop start() ran on
        self._stats_started = False  # this application's stats.start() awaits its stop()
        self._stopping = False
        # False once stop() could not save something (a queue's last commit failed).
        self.clean_stop = True

    def build_router(self) -> Router:
        """A router over this application's endpoints plus the eco.* standard ones."""
        identity = {"name": self.name, "instance": self.instance, "pid": os.getpid()}
        return Router(self.registry, standard_endpoints(self.registry, stats, error_states, identity))

    # ----- configuration -------------------------------------------------

    def argument_parser(self) -> argparse.ArgumentParser:
        """The command-line flags of this application."""
        parser = argparse.ArgumentParser(
            prog=self.name,
            description=f"ecosys application {self.name!r}. Settings come from defaults, code, "
            "ECOENV_* environment variables, the -c file and these flags, in rising precedence.",
        )
        parser.add_argument("-i", "--instance", required=self.instance is None,
                            help="instance id of this process (letters, digits, _)")
        parser.add_argument("-c", "--config_file", "--config-file", dest="config_file",
                            help="JSON configuration file (none is loaded unless given)")
        parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP")
        parser.add_argument("--udp", metavar="HOST:PORT", help="listen on UDP")
        parser.add_argument("--uds", metavar="PATH",
                            help="listen on a Unix socket; basename DEFAULT means <app>_<instance>.uds.sock")
        for key in LEVELLED_KEYS:
            field = Settings.model_fields[key]
            names = [f"--{key}"]
            if "_" in key:
                names.append(f"--{key.replace('_', '-')}")
            if field.annotation is bool:
                parser.add_argument(*names, dest=key, nargs="?", const="true", metavar="BOOL")
            else:
                parser.add_argument(*names, dest=key, metavar=key.upper())
        parser.add_argument("--extra", action="append", metavar="KEY=VALUE",
                            help="a value for config.extra (repeatable)")
        return parser

    def configure(
        self, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read flags (``sys.argv`` when None), environment and file; set ``self.config``."""
        args = self.argument_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        flags = vars(args)
        given = flags.pop("instance")
        instance = given if given is not None else self.instance
        config_file = flags.pop("config_file")
        if instance is None:
            raise ConfigurationError("no instance given: use -i/--instance")
        self.instance = check_instance(instance)
        self.config = load_settings(
            self.name, self.instance, code=self.code_config, environ=environ,
            config_file=config_file, flags=flags,
        )
        return self.config

    # ----- lifecycle -----------------------------------------------------

    async def start(self) -> None:
        """Take the lock, start logging and every configured server."""
        if self.config is None:
            if self.instance is None:
                raise ConfigurationError("no instance given: use -i/--instance or Application(instance=...)")
            self.configure(argv=[])
        cfg = self.config
        assert cfg is not None
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.clean_stop = True  # for this run
        lock = InstanceLock(cfg.lock_path)
        lock.acquire(f"{self.name} instance {self.instance}")
        # Only once it is ours: stop() after a refused start must not tear down
        # the running instance's shared state (statistics timer, background tasks).
        self._lock = lock
        # Current from here on: queue workers resuming old work may call current_app().
        _become_current(self)
        try:
            self._logs = LogSetup(
                cfg.log_path, level=cfg.log_level, max_size=cfg.log_max_size,
                backups=cfg.log_backups, compress=cfg.log_compress, console=cfg.log_console,
            )
            stats.configure(cfg.stat_gp, cfg.stat_hl)
            stats.started = time.time()  # uptime counts from the application's start
            await self._open_queues(cfg)
            await self._start_servers(cfg)
            stats.start()
            self._stats_started = True
        except BaseException:
            await self._close_servers(0)
            await self._close_queues(0)
            await self._release()
            _leave_current(self)
            raise
        where = ", ".join(repr(s) for s in self.servers) or "no transport (client only)"
        log.info("%s instance %s started on %s", self.name, self.instance, where)

    def durable_queues(self) -> list[Any]:
        """Every queued endpoint and queued sender of this application."""
        endpoints = [e for e in self.registry.endpoints.values() if isinstance(e, QueuedEndpoint)]
        return [*endpoints, *self.registry.senders.values()]

    async def _open_queues(self, cfg: Settings) -> None:
        queues = self.durable_queues()
        if not queues:
            return
        if cfg.queue_dir is None:
            names = ", ".join(repr(self._queue_label(q)) for q in queues)
            raise ConfigurationError(
                f"this application has durable queues ({names}) but no queue directory: set "
                "ECOENV_QUEUE_DIR (or queue_dir in the -c file, or --queue_dir)"
            )
        if cfg.queue_dir.exists() and not cfg.queue_dir.is_dir():
            raise ConfigurationError(f"the queue directory {cfg.queue_dir} exists and is not a directory")
        prefix = f"{self.name}-{self.instance}"
        owners: dict[Path, str] = {}
        for queue in queues:
            for path in queue.file_paths(cfg.queue_dir, prefix):
                other = owners.setdefault(path, self._queue_label(queue))
                if other != self._queue_label(queue):
                    raise ConfigurationError(f"queues {other} and {self._queue_label(queue)} would "
                                             f"share the file {path.name}: rename one")
        for queue in queues:
            await queue.open(cfg.queue_dir, prefix)
            self._open_queue_list.append(queue)
            stats.queue_sources[self._queue_label(queue)] = queue.data
        stranded = await asyncio.to_thread(stranded_queue_files, cfg.queue_dir, prefix, set(owners))
        for path, count in stranded:
            log.warning("queue file %s holds %d request(s) that no queue of this application "
                        "processes (renamed or removed?): open it again under its old name to "
                        "deliver them, or delete the file", path, count)

    @staticmethod
    def _queue_label(queue: Any) -> str:
        key = queue.route_key if isinstance(queue, QueuedEndpoint) else queue.name
        return f"{queue.kind}.{key}"

    async def _close_queues(self, grace: float, *, endpoints_only: bool = False) -> None:
        queues = [q for q in self._open_queue_list
                  if not endpoints_only or isinstance(q, QueuedEndpoint)]
        self._open_queue_list = [q for q in self._open_queue_list if q not in queues]
        for queue in queues:
            stats.queue_sources.pop(self._queue_label(queue), None)
        # Senders last: endpoint handlers and run_soon tasks may still enqueue messages.
        queues.sort(key=lambda q: isinstance(q, QueuedEndpoint), reverse=True)
        for queue in queues:
            try:
                await queue.close(grace)
            except Exception as exc:
                # What was lost, if anything, the queue itself has logged.
                log.error("closing queue %s failed: %s", self._queue_label(queue), exc)
                self.clean_stop = False

    async def _start_servers(self, cfg: Settings) -> None:
        self.router = self.build_router()
        wanted: list[Any] = []
        allow = Allowlist(cfg.allow) if cfg.allow is not None else None
        if cfg.tcp is not None:
            wanted.append(TcpServer(self.router, cfg.tcp.host, cfg.tcp.port,
                                    max_message_size=cfg.max_message_size, allow=allow))
        if cfg.udp is not None:
            wanted.append(UdpServer(self.router, cfg.udp.host, cfg.udp.port, allow=allow))
        if cfg.uds_path is not None:
            cfg.uds_path.parent.mkdir(parents=True, exist_ok=True)
            wanted.append(UdsServer(self.router, str(cfg.uds_path),
                                    max_message_size=cfg.max_message_size))
        for server in wanted:
            try:
                await server.start()
            except OSError as exc:
                raise ConfigurationError(f"cannot listen on {server!r}: {_os_reason(exc)}") from None
            self.servers.append(server)

    def request_stop(self) -> None:
        """Ask a running application to shut down (what SIGINT and SIGTERM do); any thread may call it."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                # asyncio.Event is not thread-safe: set from another thread, the
                # loop would not wake up until something else happened.
                loop.call_soon_threadsafe(self._set_stop_event)
                return
        self._set_stop_event()

    def _set_stop_event(self) -> None:
        if self._stop_event is not None:
            if self._stop_event.is_set():
                log.warning("already shutting down; waiting for in-flight work to finish")
            self._stop_event.set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`request_stop` is called."""
        assert self._stop_event is not None
        await self._stop_event.wait()

    async def stop(self) -> None:
        """Stop accepting, finish in-flight work within the grace period, release everything."""
        if self._stopping or self._lock is None:
            return
        self._stopping = True
        grace = self.config.shutdown_grace if self.config else 10.0
        log.info("shutting down (grace %.1fs)", grace)
        try:
            await self._close_servers(grace)
            # Queued endpoints before the run_soon tasks: a handler still running
            # may start tasks, which must be waited for like the others.
            await self._close_queues(grace, endpoints_only=True)
            cancelled = await self.task_keeper.wait_all(grace)
            if cancelled:
                log.warning("%d background task(s) cancelled at shutdown", cancelled)
            # Senders last: handlers and run_soon tasks may still enqueue messages.
            await self._close_queues(grace)
            if self._stats_started:
                # Shared by every application in the process: only this one's start is undone.
                self._stats_started = False
                await stats.stop()
            log.info("%s instance %s stopped", self.name, self.instance)
        finally:
            await self._release()
            _leave_current(self)
            self._stopping = False

    async def _close_servers(self, grace: float) -> None:
        servers, self.servers = self.servers, []
        await asyncio.gather(*(server.close(grace) for server in servers), return_exceptions=True)

    async def _release(self) -> None:
        logs, self._logs = self._logs, None
        try:
            if logs is not None:
                # Off the loop: closing joins the log thread and waits out a blocked
                # stderr for up to a second, and another application may share the loop.
                await asyncio.to_thread(logs.close)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    async def serve(self) -> None:
        """Start, run until asked to stop (signal or :meth:`request_stop`), then stop."""
        await self.start()
        await self._serve_started(banner=False)

    async def _serve_started(self, *, banner: bool) -> None:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without signals
        try:
            if banner:
                # Printed only once signals are handled: whoever waits for this
                # line may stop the process with SIGTERM right away.
                assert self.config is not None
                print(
                    f"{self.name} instance {self.instance} listening on "
                    f"{', '.join(repr(s) for s in self.servers) or 'no transport'}; "
                    f"log {self.config.log_path}",
                    flush=True,
                )
            await self.wait_stopped()
        finally:
            # Handlers stay during the drain: a second signal must not kill the
            # process half-way through flushing queues.
            try:
                await self.stop()
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

    def run(self, argv: Sequence[str] | None = None) -> None:
        """Parse the command line and serve until SIGINT/SIGTERM; exits the process."""
        try:
            cfg = self.configure(argv)
            factory = loop_factory(cfg.event_loop)
        except ConfigurationError as exc:
            print(f"{self.name}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        with asyncio.Runner(loop_factory=factory) as runner:
            sys.exit(runner.run(self._main()))

    async def _main(self) -> int:
        try:
            await self.start()
        except EcosysError as exc:
            print(f"{self.name}: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # e.g. a log or lock directory that cannot be created
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"{self.name}: error: {exc.strerror or exc}{where}", file=sys.stderr)
            return 1
        await self._serve_started(banner=True)
        # Not 0 when something could not be saved at the stop: a supervisor should know.
        return 0 if self.clean_stop else 1


def loop_factory(event_loop: str = "auto") -> Any:
    """The event loop factory for a setting: uvloop when installed (or demanded), else asyncio's."""
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop
        except ImportError:
            if event_loop == "uvloop":
                raise ConfigurationError("event_loop is 'uvloop' but uvloop is not installed") from None
    return None

