"""The ``eco`` command against a real service process over TCP, UDP and UDS.

One service process (written below, started once for the module) has plain
endpoints, a queued endpoint ``jobs`` whose handler fails for negative
numbers, and a queued sender ``outbox`` that delivers to the service's own
``take`` endpoint, which refuses negative numbers with status 300. Every eco
subcommand runs against it, in table and in --json form, in-process through
typer's CliRunner (fast); the exit code contract is also checked on the real
``python -m ecosys.cli`` and ``eco`` executables.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apphelpers import AppProcess, app_env, free_port, wait_until
from typer.testing import CliRunner, Result

import ecosys
from ecosys.build import build_kind
from ecosys.cli import app

SERVICE_SCRIPT = '''
"""A service for the eco CLI tests."""

import os

from pydantic import BaseModel

from ecosys import (Application, Reject, TcpClient, backoff, endpoint, error_states,
                    queued_endpoint, queued_sender, stats)


class Echo(BaseModel):
    message: str


class Job(BaseModel):
    n: int


@endpoint("echo")
async def echo(request: Echo) -> Echo:
    return request


@endpoint("whoami")
async def whoami(uid: str) -> str:
    return uid


@endpoint("setup")
async def setup() -> dict:
    error_states.raise_state("disk.full", "disk at 99%")
    error_states.raise_state("disk.full")
    error_states.raise_state("feed.stale", "no prices for 60 s")
    stats.set("orders.open", 3)
    stats.set("orders.filled", 5)
    stats.set("orders", 8)
    stats.set("note", "fine")
    return {"ok": True}


@queued_endpoint("jobs", max_retries=0, retry_delay=0.01)
async def jobs(request: Job) -> bool:
    if request.n < 0:
        raise RuntimeError(f"job {request.n} is negative")
    return True


@endpoint("take")
async def take(request: Job) -> None:
    if request.n < 0:
        raise Reject(300, f"refusing {request.n}")


@queued_sender(TcpClient("127.0.0.1", int(os.environ["CLI_TEST_PORT"]), retries=0, timeout=2),
               "take", name="outbox", backoff=backoff.constant(0.05))
def outbox(n: int) -> Job:
    return Job(n=n)


@endpoint("outbox.put")
async def put(request: Job) -> str:
    return await outbox(request.n)


if __name__ == "__main__":
    Application().run()
'''


@dataclass
class Service:
    """A running test service and its three addresses."""

    port: int
    udp_port: int
    uds_path: Path
    process: AppProcess

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def udp(self) -> str:
        return f"udp://127.0.0.1:{self.udp_port}"

    @property
    def uds(self) -> str:
        return f"uds://{self.uds_path}"


@contextlib.contextmanager
def run_service(**env_extra: str) -> Iterator[Service]:
    """Start the test service in a fresh short directory (UDS paths are length-limited).

    *env_extra* adds environment variables, e.g. ``ECOENV_STAT_GP="1"``.
    """
    directory = Path(tempfile.mkdtemp(prefix="ecocli", dir="/tmp"))
    script = directory / "cli_service.py"
    script.write_text(SERVICE_SCRIPT)
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    uds_path = directory / "s.sock"
    env = app_env(ECOENV_DEFAULT_DIR=directory, ECOENV_QUEUE_DIR=directory / "queues",
                  CLI_TEST_PORT=str(port), **env_extra)
    args = ["-i", "1", "--tcp", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{udp_port}", "--uds", str(uds_path)]
    try:
        with AppProcess(script, args, env, directory, label="cli_service") as process:
            process.wait_ready(probe_port=port)
            yield Service(port, udp_port, uds_path, process)
            process.terminate()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with run_service() as running:
        yield running


RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TERM": "dumb"}


def eco(*args: str, input: str | bytes | None = None) -> Result:
    """Run ``eco ARGS`` in-process; never raises."""
    return RUNNER.invoke(app, list(args), env=ENV, input=input)


def ok(*args: str, input: str | None = None) -> str:
    """``eco ARGS``, which must succeed; its stdout."""
    result = eco(*args, input=input)
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stderr == "", result.stderr
    return result.stdout


def js(*args: str, input: str | None = None) -> Any:
    """``eco ARGS --json``: one JSON document."""
    return json.loads(ok(*args, "--json", input=input))


def fails(code: int, *args: str) -> Result:
    """``eco ARGS``, which must fail with *code* and exactly one line on stderr."""
    result = eco(*args)
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result


def queue_state(service: Service, queue: str, *sender: str) -> dict[str, Any]:
    state = js("queue", "data", service.tcp, queue, *sender)
    assert isinstance(state, dict)
    return state


def settle(service: Service, queue: str, *sender: str, pending: int = 0, errors: int) -> dict[str, Any]:
    """Wait until the queue has *pending* and *errors* entries."""
    last: dict[str, Any] = {}

    def check() -> bool:
        last.update(queue_state(service, queue, *sender))
        return bool(last["pending"] == pending and last["errors"] == errors
                    and last.get("in_flight", 0) == 0)

    assert wait_until(check, timeout=10), last
    return last


# ----- help --------------------------------------------------------------------------------


COMMANDS = [
    ["stats"], ["send"], ["metrics"], ["errors"], ["errors", "get"], ["errors", "clear"], ["queue"],
    *[["queue", c] for c in ("data", "pause", "unpause", "sender-pause", "sender-unpause", "errors",
                             "reprocess", "inspect", "pop", "clear")],
]


def test_help_on_every_command_and_exit_codes_in_the_epilog() -> None:
    top = ok("--help")
    for word in ("stats", "send", "metrics", "errors", "queue", "Exit codes"):
        assert word in top
    for code, meaning in (("0", "success"), ("1", "error status"), ("2", "usage error"), ("3", "connection")):
        assert any(line.strip().startswith(code) and meaning in line for line in top.splitlines()), meaning
    for command in COMMANDS:
        text = ok(*command, "--help")
        assert "Usage: " in text and "Exit codes" in text, command
    assert "--what" in ok("queue", "pause", "--help")
    assert "--sender" in ok("queue", "reprocess", "--help") and "--all" in ok("queue", "reprocess", "--help")
    assert "--listen" in ok("metrics", "--help")


def test_version_option_prints_the_package_version() -> None:
    assert ok("--version").strip() == f"eco (ecosys {ecosys.__version__}, {build_kind()})"
    assert ok("-V") == ok("--version")


# ----- send ----------------------------------------------------------------------------------


def test_send_prints_response_data(service: Service) -> None:
    assert json.loads(ok("send", service.tcp, "echo", '{"message": "hi"}')) == {"message": "hi"}
    assert js("send", service.tcp, "echo", '{"message": "hi"}') == {"message": "hi"}
    uid = str(uuid.uuid4())
    assert js("send", service.tcp, "whoami", "--uid", uid) == uid
    assert uid in ok("send", service.tcp, "whoami", "--uid", uid, "--timeout", "2")
    assert js("send", service.tcp, "echo", "-", input='{"message": "from stdin"}') == {"message": "from stdin"}
    # Every transport.
    assert js("send", service.udp, "echo", '{"message": "udp"}') == {"message": "udp"}
    assert js("send", service.uds, "echo", '{"message": "uds"}') == {"message": "uds"}


def test_send_errors_exit_codes(service: Service) -> None:
    result = fails(1, "send", service.tcp, "no.such.route")
    assert result.stderr.strip() == "status 400: unknown route key: 'no.such.route'"
    assert result.stdout == ""
    # --json also puts the error on stdout, machine-readable.
    result = fails(1, "send", service.tcp, "echo", '{"wrong": 1}', "--json")
    assert result.stderr.startswith("status 300: request data does not fit 'echo' (message: Field required")
    error = json.loads(result.stdout)
    assert error["status"] == 300 and error["details"][0]["loc"] == ["message"]
    assert fails(2, "send", service.tcp, "echo", "{not json").stderr.startswith("eco: error: invalid JSON argument")
    assert "is not a UUID" in fails(2, "send", service.tcp, "echo", "--uid", "nope").stderr
    assert "bad target" in fails(2, "send", "tcp://127.0.0.1", "echo").stderr


# ----- stats ---------------------------------------------------------------------------------


def test_stats_tables_and_json_over_every_transport(service: Service) -> None:
    ok("send", service.tcp, "setup")
    for n in range(3):
        ok("send", service.tcp, "echo", json.dumps({"message": str(n)}))
    eco("send", service.tcp, "echo", "{}")  # one validation error
    ok("send", service.tcp, "jobs", '{"n": 1}')
    ok("send", service.tcp, "outbox.put", '{"n": 1}')
    settle(service, "outbox", "--sender", errors=queue_state(service, "outbox", "--sender")["errors"])

    table = ok("stats", service.tcp)
    for needle in ("Uptime", "Current period", "Endpoints", "echo", "300×", "p99", "latency in ms", "Queued handlers",
                   "Senders", f"take @ {service.tcp}", "Queues", "jobs", "outbox", "Custom statistics",
                   "orders = 8", "open = 3", "filled = 5", 'note = "fine"'):
        assert needle in table, (needle, table)

    snap = js("stats", service.tcp)
    current = snap["current"]
    assert snap["uptime"] > 0 and current["end"] is None
    assert current["endpoints"]["echo"]["calls"] >= 4 and current["endpoints"]["echo"]["errors"]["300"] >= 1
    assert set(current["endpoints"]["echo"]["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert current["queues"]["endpoint.jobs"]["queue_route_key"] == "jobs"
    assert current["queues"]["sender.outbox"]["delivered"] >= 1
    assert current["custom"]["orders"] == {"_": 8, "open": 3, "filled": 5}

    # The same over UDP and UDS.
    assert js("stats", service.udp)["current"]["endpoints"]["echo"]["calls"] >= 4
    assert "Endpoints" in ok("stats", service.uds, "--type", "current")

    # No period has closed yet (gathering period 300 s).
    assert "No period has been gathered yet" in ok("stats", service.tcp, "--type", "gathered")
    assert js("stats", service.tcp, "--type", "gathered")["gathered"] is None
    assert "No period has been gathered yet" in ok("stats", service.tcp, "--type", "full")
    assert js("stats", service.tcp, "--type", "full")["history"] == []
    assert eco("stats", service.tcp, "--type", "weekly").exit_code == 2


# ----- error states ----------------------------------------------------------------------------


def test_error_states_get_and_clear(service: Service) -> None:
    ok("send", service.tcp, "setup")
    table = ok("errors", "get", service.tcp)
    assert "disk.full" in table and "disk at 99%" in table and "feed.stale" in table
    states = js("errors", "get", service.tcp)
    assert states["disk.full"]["count"] >= 2 and states["feed.stale"]["description"] == "no prices for 60 s"

    assert ok("errors", "clear", service.tcp, "disk.full", "nope").strip() == "Cleared 1 error state(s): disk.full"
    assert ok("errors", "clear", service.tcp, "disk.full").strip() == \
        "Nothing to clear: none of these error states was raised."
    assert list(js("errors", "get", service.tcp)) == ["feed.stale"]
    assert js("errors", "clear", service.tcp) == {"cleared": ["feed.stale"]}
    assert "No error states raised" in ok("errors", "get", service.tcp)
    assert ok("errors", "clear", service.tcp).strip() == "Nothing to clear: no error state is raised."
    assert js("errors", "get", service.tcp) == {}


# ----- queued endpoint -------------------------------------------------------------------------


def test_queued_endpoint_data_pause_and_unpause(service: Service) -> None:
    table = ok("queue", "data", service.tcp)
    assert "Queued endpoints" in table and "jobs" in table
    listing = js("queue", "data", service.tcp)
    assert [q["queue_route_key"] for q in listing] == ["jobs"]
    assert "jobs" in ok("queue", "data", service.tcp, "jobs")

    out = ok("queue", "pause", service.tcp, "jobs", "--what", "receiving")
    assert "Paused receiving of 'jobs'" in out and "paused" in out
    busy = fails(1, "send", service.tcp, "jobs", '{"n": 1}')
    assert busy.stderr.strip() == "status 500: receiving is paused for 'jobs'"
    state = js("queue", "unpause", service.tcp, "jobs", "--what", "receiving")
    assert state["receiving"] is True and state["processing"] is True

    state = js("queue", "pause", service.tcp, "jobs", "-w", "processing")
    assert state["processing"] is False and state["receiving"] is True
    ok("send", service.tcp, "jobs", '{"n": 7}')
    assert queue_state(service, "jobs")["pending"] == 1
    assert "Resumed processing of 'jobs'" in ok("queue", "unpause", service.tcp, "jobs", "--what", "processing")
    settle(service, "jobs", errors=queue_state(service, "jobs")["errors"])

    state = js("queue", "pause", service.tcp, "jobs")  # default: all
    assert state["receiving"] is False and state["processing"] is False
    assert "Paused receiving and processing" in ok("queue", "pause", service.tcp, "jobs", "--what", "all")
    assert "Resumed receiving and processing" in ok("queue", "unpause", service.tcp, "jobs")
    state = js("queue", "unpause", service.tcp, "jobs", "--what", "all")
    assert state["receiving"] is True and state["processing"] is True

    unknown = fails(1, "queue", "pause", service.tcp, "outbox")
    assert unknown.stderr.strip() == "status 300: unknown queued endpoint 'outbox' (known: jobs)"


def test_queued_endpoint_error_queue(service: Service) -> None:
    ok("queue", "clear", service.tcp, "jobs")
    uids = [js("send", service.tcp, "jobs", json.dumps({"n": -n}))["uid"] for n in range(1, 5)]
    settle(service, "jobs", errors=4)

    table = ok("queue", "errors", service.tcp, "jobs")
    assert all(uid in table for uid in uids) and "RuntimeError: job -1 is negative" in table
    entries = js("queue", "errors", service.tcp, "jobs")
    assert [e["uid"] for e in entries] == uids and entries[0]["attempts"] == 1

    table = ok("queue", "inspect", service.tcp, "jobs", uids[0])
    assert uids[0] in table and "RuntimeError: job -1 is negative" in table and '"n": -1' in table
    entry = js("queue", "inspect", service.tcp, "jobs", uids[0])
    assert entry["request"] == {"n": -1} and entry["reason"] == "RuntimeError: job -1 is negative"

    assert "Removed from the error queue" in ok("queue", "pop", service.tcp, "jobs", uids[0])
    assert js("queue", "pop", service.tcp, "jobs", uids[1])["request"] == {"n": -2}
    settle(service, "jobs", errors=2)
    assert "no request with uid" in fails(1, "queue", "inspect", service.tcp, "jobs", uids[0]).stderr

    # Reprocessing runs the handler again; it fails again, so the requests come back.
    out = ok("queue", "reprocess", service.tcp, "jobs", uids[2])
    assert out.strip() == "Reprocessed 1 request(s) from the error queue of queued endpoint 'jobs'."
    settle(service, "jobs", errors=2)
    assert js("queue", "reprocess", service.tcp, "jobs", "--all") == {"reprocessed": 2}
    settle(service, "jobs", errors=2)
    assert "Reprocessed 2" in ok("queue", "reprocess", service.tcp, "jobs", "-a")
    settle(service, "jobs", errors=2)
    assert js("queue", "reprocess", service.tcp, "jobs", uids[3]) == {"reprocessed": 1}
    settle(service, "jobs", errors=2)
    assert {e["attempts"] for e in js("queue", "errors", service.tcp, "jobs")} == {1}
    assert "UID or --all" in fails(2, "queue", "reprocess", service.tcp, "jobs").stderr
    assert "UID or --all" in fails(2, "queue", "reprocess", service.tcp, "jobs", uids[2], "--all").stderr

    assert ok("queue", "clear", service.tcp, "jobs").strip() == (
        "Cleared 2 request(s) from the error queue of queued endpoint 'jobs'.")
    assert "is empty" in ok("queue", "errors", service.tcp, "jobs")
    assert js("queue", "errors", service.tcp, "jobs") == []
    js("send", service.tcp, "jobs", '{"n": -9}')
    settle(service, "jobs", errors=1)
    assert js("queue", "clear", service.tcp, "jobs") == {"cleared": 1}


# ----- queued sender ---------------------------------------------------------------------------


def test_queued_sender_commands(service: Service) -> None:
    ok("queue", "clear", service.tcp, "outbox", "--sender")
    out = ok("queue", "sender-pause", service.tcp, "outbox")
    assert "Paused sending of 'outbox'" in out and "outbox" in out
    uids = [js("send", service.tcp, "outbox.put", json.dumps({"n": n})) for n in (-1, -2, 3)]
    state = queue_state(service, "outbox", "--sender")
    assert state["sending"] is False and state["pending"] == 3
    assert js("queue", "sender-unpause", service.tcp, "outbox")["sending"] is True
    settle(service, "outbox", "--sender", errors=2)
    assert "Resumed sending of 'outbox'" in ok("queue", "sender-unpause", service.tcp, "outbox")
    assert js("queue", "sender-pause", service.tcp, "outbox")["sending"] is False
    ok("queue", "sender-unpause", service.tcp, "outbox")

    table = ok("queue", "data", service.tcp, "--sender")
    assert "Queued senders" in table and "outbox" in table and f"{service.tcp}" in table
    assert [s["queue_route_key"] for s in js("queue", "data", service.tcp, "-s")] == ["outbox"]
    assert js("queue", "data", service.tcp, "outbox", "--sender")["errors"] == 2

    table = ok("queue", "errors", service.tcp, "outbox", "--sender")
    assert uids[0] in table and "status 300: refusing -1" in table
    entries = js("queue", "errors", service.tcp, "outbox", "--sender")
    assert [e["uid"] for e in entries] == uids[:2]
    assert "status 300: refusing -2" in ok("queue", "inspect", service.tcp, "outbox", uids[1], "--sender")
    assert js("queue", "inspect", service.tcp, "outbox", uids[1], "-s")["request"] == {"n": -2}

    # The target refuses them again: reprocessed messages come back to the error queue.
    assert "Reprocessed 1 request(s) from the error queue of queued sender 'outbox'" in ok(
        "queue", "reprocess", service.tcp, "outbox", uids[0], "--sender")
    settle(service, "outbox", "--sender", errors=2)
    assert js("queue", "reprocess", service.tcp, "outbox", "--all", "--sender") == {"reprocessed": 2}
    settle(service, "outbox", "--sender", errors=2)

    assert "Removed from the error queue of queued sender 'outbox'" in ok(
        "queue", "pop", service.tcp, "outbox", uids[0], "--sender")
    assert js("queue", "pop", service.tcp, "outbox", uids[1], "--sender")["request"] == {"n": -2}
    settle(service, "outbox", "--sender", errors=0)
    js("send", service.tcp, "outbox.put", '{"n": -4}')
    settle(service, "outbox", "--sender", errors=1)
    assert "Cleared 1 request(s)" in ok("queue", "clear", service.tcp, "outbox", "--sender")
    js("send", service.tcp, "outbox.put", '{"n": -5}')
    settle(service, "outbox", "--sender", errors=1)
    assert js("queue", "clear", service.tcp, "outbox", "--sender") == {"cleared": 1}

    unknown = fails(1, "queue", "sender-pause", service.tcp, "jobs")
    assert unknown.stderr.strip() == "status 300: unknown queued sender 'jobs' (known: outbox)"
    assert "unknown queued sender" in fails(1, "queue", "errors", service.tcp, "nope", "--sender").stderr


# ----- failures --------------------------------------------------------------------------------


def test_down_and_hung_services_exit_3_in_process(service: Service) -> None:
    down = free_port()
    result = fails(3, "stats", f"tcp://127.0.0.1:{down}")
    assert result.stderr.startswith(f"eco: cannot connect to tcp://127.0.0.1:{down}")
    assert fails(3, "errors", "get", f"uds://{service.uds_path}.missing").stderr.startswith("eco: cannot connect")
    assert "unreachable" in fails(3, "queue", "data", f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}").stderr
    # A listener that never answers: a timeout.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        url = f"tcp://127.0.0.1:{hung.getsockname()[1]}"
        result = fails(3, "send", url, "echo", "--timeout", "0.3")
    assert result.stderr.strip() == f"eco: {url}: no answer to 'echo' within 0.3s (service hung or overloaded?)"
    # An IPv6 target is named once, in brackets, as it was given.
    v6 = f"tcp://[::1]:{down}"
    assert fails(3, "stats", v6).stderr.startswith(f"eco: cannot connect to {v6}: ")
    for args in (["stats", "foo"], ["queue", "data", "http://x:1"], ["errors", "clear", "uds://"]):
        assert fails(2, *args).stderr.startswith("eco: error: bad target")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecosys.cli", *args], capture_output=True, text=True,
                          timeout=30, env=app_env(COLUMNS="200"))


def test_exit_codes_of_the_real_program(service: Service) -> None:
    """Wrong URL, unknown route and a down service: one line each, distinct exit codes, no traceback."""
    cases = [
        (["stats", "tcp:/nowhere"], 2, "eco: error: bad target 'tcp:/nowhere'"),
        (["send", service.tcp, "no.such.route"], 1, "status 400: unknown route key: 'no.such.route'"),
        (["stats", f"tcp://127.0.0.1:{free_port()}"], 3, "eco: cannot connect to tcp://127.0.0.1:"),
    ]
    for args, code, start in cases:
        done = _run(*args)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(start), done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
    done = _run("send", service.tcp, "echo", '{"message": "real"}', "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"message": "real"}
    usage = _run("queue", "nonsense")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("eco")
    if not script.exists():
        pytest.skip("the eco console script is not installed in this environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30,
                          env=app_env(COLUMNS="200"))
    assert done.returncode == 0 and "Exit codes" in done.stdout


def test_a_connect_timeout_says_so_and_follows_the_timeout_option() -> None:
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue: further connects hang
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        started = time.perf_counter()
        result = fails(3, "stats", f"tcp://127.0.0.1:{port}", "-t", "1")
        took = time.perf_counter() - started
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert "timed out after 1s" in result.stderr, result.stderr
    assert took < 3.0, f"--timeout 1 took {took:.1f}s"


def test_a_uds_url_with_two_slashes_is_a_usage_error_when_no_such_socket(tmp_path: Path) -> None:
    result = fails(2, "stats", "uds://no/such/dir/app.sock")
    assert "uds:///no/such/dir/app.sock" in result.stderr


def test_an_answer_of_the_wrong_shape_is_a_message_not_a_traceback() -> None:
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer_with_a_list() -> None:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile("rb").readline())
            reply = {"uid": request["uid"], "status": 0, "data": [1, 2]}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    peer = threading.Thread(target=answer_with_a_list, daemon=True)
    peer.start()
    try:
        result = fails(3, "stats", f"tcp://127.0.0.1:{port}")
    finally:
        peer.join(5)
        server.close()
    assert "unexpected answer" in result.stderr


def test_nan_is_not_json(service: Service) -> None:
    result = fails(2, "send", service.tcp, "echo", "NaN")
    assert "invalid JSON" in result.stderr


def test_json_that_cannot_be_sent_as_given_is_a_usage_error(service: Service) -> None:
    """Parses as JSON but cannot go out as it was given: exit 2 before any request."""
    cases = {
        '{"message": "\\ud800"}': "lone surrogate",  # a lone surrogate escape: not UTF-8
        '{"big": 1e999}': "too large",  # overflows to inf, which would go out as null
        "[-1e999]": "too large",
        "[" * 300 + "]" * 300: "cannot be sent",  # deeper than the encoder goes
        "[" * 100_000 + "]" * 100_000: "invalid JSON argument",  # deeper than the parser goes
    }
    for text, why in cases.items():
        result = fails(2, "send", service.tcp, "echo", text)
        assert result.stderr.startswith("eco: error: invalid JSON argument") and why in result.stderr, \
            (text[:30], result.stderr)
    result = eco("send", service.tcp, "echo", "-", input=b'{"message": "\xff"}')
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert result.stderr.startswith("eco: error: invalid JSON argument: stdin is not UTF-8"), result.stderr
    # The real program, whatever error handler the locale gives stdin.
    for env in (app_env(LC_ALL="C.UTF-8"), app_env(LC_ALL="C", PYTHONUTF8="1")):
        done = subprocess.run([sys.executable, "-m", "ecosys.cli", "send", service.tcp, "echo", "-"],
                              input=b'{"message": "\xff"}', capture_output=True, timeout=30, env=env)
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 2 and stderr.startswith("eco: error: invalid JSON argument"), stderr
        assert stderr.count("\n") == 1 and done.stdout == b""


def test_a_malformed_bracketed_host_is_a_bad_target() -> None:
    for url in ("tcp://[::1", "tcp://[zz]:80", "uds://[x", "udp://[::1:80"):
        for args in (["stats", url], ["send", url, "echo"], ["metrics", url], ["metrics", f"name={url}"]):
            assert fails(2, *args).stderr.startswith(f"eco: error: bad target {url!r}: "), args


def test_a_reader_that_stops_early_is_not_an_error(service: Service) -> None:
    # eco stats ... | head -1: the pipe closes while eco still writes its tables.
    eco_command = shutil.which("eco", path=str(Path(sys.executable).parent))
    assert eco_command is not None
    codes = []
    for _ in range(5):
        result = subprocess.run(f"{eco_command} stats {service.tcp} --type full | head -1 > /dev/null; "
                                "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                                capture_output=True, text=True, timeout=30)
        codes.append(result.stdout.strip())
        assert "Traceback" not in result.stderr
    assert codes == ["0"] * 5, f"exit codes {codes}"
