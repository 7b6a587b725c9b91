"""The application as a real process: single instance lock, graceful SIGTERM, start-up errors, banner.

Each test runs tests/apps/slow_server.py with its own ECOENV_DEFAULT_DIR and free ports.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apphelpers import (
    SLOW_SERVER,
    AppProcess,
    app_env,
    connect_tcp,
    free_port,
    read_response,
    request_tcp,
    request_uds,
    run_app,
    send_request,
    socket_friendly_dir,
    wait_until,
)

NAME = "slow_server"
INSTANCE = "1"


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    with socket_friendly_dir(tmp_path) as path:
        yield path


def start(app_dir: Path, port: int, *, label: str = "app", extra_args: tuple[str, ...] = ()) -> AppProcess:
    return AppProcess(
        SLOW_SERVER,
        ["-i", INSTANCE, "--tcp", f"127.0.0.1:{port}", "--uds", "DEFAULT", *extra_args],
        app_env(ECOENV_DEFAULT_DIR=app_dir),
        app_dir,
        label=label,
    )


def lock_file(app_dir: Path) -> Path:
    return app_dir / f"{NAME}-{INSTANCE}.lock"


def uds_file(app_dir: Path) -> Path:
    return app_dir / f"{NAME}_{INSTANCE}.uds.sock"


def test_second_start_refused_until_first_is_killed(app_dir: Path) -> None:
    port = free_port()
    with start(app_dir, port, label="first") as first:
        first.wait_ready(probe_port=port)
        assert request_tcp(port, "echo", {"message": "one"})["data"] == {"message": "one"}
        assert lock_file(app_dir).read_text().strip() == str(first.pid), "the lock file holds the owner's pid"

        # Another TCP port, so only the lock can stop the second start.
        second = run_app(SLOW_SERVER, ["-i", INSTANCE, "--tcp", f"127.0.0.1:{free_port()}"],
                         app_env(ECOENV_DEFAULT_DIR=app_dir))
        assert second.returncode != 0, f"a second start must fail; stdout {second.stdout!r}"
        assert "already running" in second.stderr, f"stderr must say so: {second.stderr!r}"
        assert str(first.pid) in second.stderr, f"stderr should name the owner's pid: {second.stderr!r}"
        assert "Traceback" not in second.stderr, second.stderr
        assert first.proc.poll() is None, "the first instance must keep running"
        assert request_tcp(port, "echo", {"message": "two"})["data"] == {"message": "two"}

        first.proc.send_signal(signal.SIGKILL)
        first.wait()

    # kill -9 left the lock file and the socket file behind: neither may block a restart.
    assert lock_file(app_dir).exists() and uds_file(app_dir).exists(), "kill -9 cannot clean up"
    with start(app_dir, port, label="third") as third:
        third.wait_ready(probe_port=port)
        assert request_tcp(port, "echo", {"message": "three"})["data"] == {"message": "three"}
        assert request_uds(uds_file(app_dir), "echo", {"message": "four"})["data"] == {"message": "four"}
        assert third.terminate() == 0, third.describe()


def test_sigterm_finishes_in_flight_request_and_cleans_up(app_dir: Path) -> None:
    port = free_port()
    uid = "0b6c9a52-3f7e-4f55-9a5e-2c1d8e4f7a10"
    with start(app_dir, port) as app:
        app.wait_ready(probe_port=port)
        assert lock_file(app_dir).exists() and uds_file(app_dir).exists()
        with connect_tcp(port) as sock:
            send_request(sock, "slow", {"seconds": 1.5}, uid=uid)
            app.wait_for_output(f"slow started {uid}", timeout=10)
            signalled = time.monotonic()
            app.signal(signal.SIGTERM)

            # While it drains, the application takes no new connections.
            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    return True
                return False

            assert wait_until(refused, timeout=1.0), "new connections must be refused after SIGTERM"
            assert app.proc.poll() is None, "the process must wait for the in-flight request"

            response = read_response(sock, timeout=10)
        assert response == {"uid": uid, "status": 0, "data": {"slept": 1.5}}, (
            f"the in-flight request must complete after SIGTERM: {response}"
        )
        code = app.wait()
        took = time.monotonic() - signalled
        assert code == 0, f"exit code after SIGTERM must be 0\n{app.describe()}"
        assert took >= 1.0, f"the process exited {took:.2f}s after SIGTERM, before the request could finish"
        assert "Traceback" not in app.stderr_text(), app.describe()
    assert not lock_file(app_dir).exists(), "the lock file must be removed at shutdown"
    assert not uds_file(app_dir).exists(), "the UDS socket file must be removed at shutdown"
    log_text = (app_dir / f"{NAME}-{INSTANCE}.log").read_text()
    assert f"[{uid}] slow request done" in log_text, f"the log must be flushed at exit:\n{log_text}"


@pytest.mark.parametrize(
    ("case", "args", "env", "needle"),
    [
        pytest.param(case, args, env, needle, id=case.replace(" ", "-"))
        for case, args, env, needle in [
            ("bad port flag", ["--tcp", "127.0.0.1:99999"], {}, "--tcp"),
            ("bad port variable", [], {"ECOENV_TCP_SLOW_SERVER_1": "127.0.0.1:abc"}, "ECOENV_TCP_SLOW_SERVER_1"),
            ("bad log level", [], {"ECOENV_LOG_LEVEL": "LOUD"}, "ECOENV_LOG_LEVEL"),
            ("malformed file", ["-c", "{dir}/broken.json"], {}, "{dir}/broken.json"),
            ("bad file value", ["-c", "{dir}/values.json"], {}, "'log_max_size'"),
            ("unknown file key", ["-c", "{dir}/unknown.json"], {}, "'log_levle'"),
        ]
    ],
)
def test_bad_configuration_fails_start_with_one_line(
    app_dir: Path, case: str, args: list[str], env: dict[str, str], needle: str
) -> None:
    (app_dir / "broken.json").write_text('{"log_level": "DEBUG"', encoding="utf-8")
    (app_dir / "values.json").write_text(json.dumps({"log_max_size": 10}), encoding="utf-8")
    (app_dir / "unknown.json").write_text(json.dumps({"log_levle": "DEBUG"}), encoding="utf-8")
    args = [a.replace("{dir}", str(app_dir)) for a in args]
    needle = needle.replace("{dir}", str(app_dir))
    result = run_app(SLOW_SERVER, ["-i", INSTANCE, *args], app_env(ECOENV_DEFAULT_DIR=app_dir, **env))
    assert result.returncode != 0, f"{case}: the start must fail; stdout {result.stdout!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{case}: expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert needle in lines[0], f"{case}: the error must name {needle!r}: {lines[0]!r}"
    assert lines[0].startswith(f"{NAME}: error:"), lines[0]
    assert " listening on " not in result.stdout, "no banner for a failed start"
    assert not lock_file(app_dir).exists(), f"{case}: a failed start leaves no lock file"


def test_port_in_use_fails_start_cleanly(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app(SLOW_SERVER, ["-i", INSTANCE, "--tcp", f"127.0.0.1:{port}", "--uds", "DEFAULT"],
                         app_env(ECOENV_DEFAULT_DIR=app_dir))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr, f"the error must name the address: {result.stderr!r}"
    assert not lock_file(app_dir).exists(), "a failed start must release its lock"
    assert not uds_file(app_dir).exists(), "a failed start must not leave a socket file"


def test_startup_banner_on_stdout(app_dir: Path) -> None:
    port = free_port()
    with start(app_dir, port) as app:
        banner = app.wait_ready(probe_port=port)
        assert banner.startswith(f"{NAME} instance {INSTANCE} listening on "), banner
        assert f"tcp://127.0.0.1:{port}" in banner, banner
        assert f"uds://{uds_file(app_dir)}" in banner, banner
        assert str(app_dir / f"{NAME}-{INSTANCE}.log") in banner, "the banner says where the log is"
        assert app.terminate() == 0, app.describe()


def test_sigint_is_a_graceful_stop_too(app_dir: Path) -> None:
    port = free_port()
    with start(app_dir, port) as app:
        app.wait_ready(probe_port=port)
        app.signal(signal.SIGINT)
        assert app.wait() == 0, f"SIGINT must stop the application with exit 0\n{app.describe()}"
        assert "Traceback" not in app.stderr_text(), app.describe()
    assert not lock_file(app_dir).exists() and not uds_file(app_dir).exists(), "SIGINT must clean up too"


def test_name_comes_from_the_program_in_snake_case(app_dir: Path) -> None:
    script = app_dir / "EchoServer.py"
    shutil.copy(SLOW_SERVER, script)
    port = free_port()
    with AppProcess(script, ["-i", "x", "--tcp", f"127.0.0.1:{port}"],
                    app_env(ECOENV_DEFAULT_DIR=app_dir), app_dir) as app:
        banner = app.wait_ready(probe_port=port)
        assert banner.startswith("echo_server instance x listening on "), banner
        assert (app_dir / "echo_server-x.lock").exists()
        assert app.terminate() == 0, app.describe()


def test_sigterm_right_after_the_banner_is_a_graceful_stop(app_dir: Path) -> None:
    """The banner says the application is up: from then on SIGTERM must mean a clean exit 0.

    The window between the banner and the installation of the signal handlers is
    short, so the check is repeated to catch it reliably.
    """
    outcomes = []
    for attempt in range(8):
        port = free_port()
        with start(app_dir, port, label=f"attempt{attempt}") as app:
            app.wait_ready()
            app.signal(signal.SIGTERM)
            code = app.wait()
            outcomes.append((code, lock_file(app_dir).exists(), uds_file(app_dir).exists()))
    bad = [o for o in outcomes if o != (0, False, False)]
    assert not bad, (
        f"{len(bad)} of {len(outcomes)} starts did not shut down cleanly on a SIGTERM sent right after "
        f"the banner (exit code, lock file left, socket file left): {outcomes}"
    )
