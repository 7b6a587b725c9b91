"""The examples run as users would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def test_echo_tour_runs_clean() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "echo" / "demo.py")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    for transport in ("TCP", "UDP", "UDS"):
        assert f"hello over {transport} from sender_client.py" in result.stdout


def test_base_example_answers(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, ECOENV_DEFAULT_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "base" / "base.py"), "-i", "t", "--tcp", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert "base instance t listening on tcp://127.0.0.1:" in proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b'{"route_key": "hello"}\n')
            reply = conn.makefile("rb").readline()
        assert orjson.loads(reply)["data"] == {"text": "hello from ecosys"}
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_javascript_echo_client_over_every_transport(tmp_path: Path) -> None:
    import shutil
    import socket

    node = shutil.which("node")
    assert node is not None, "node (Node.js >= 18) is needed for the JavaScript example; `make test` installs it"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = tmp_path / "echo.sock"
    env = dict(os.environ, ECOENV_DEFAULT_DIR=str(tmp_path))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "echo" / "echo_server.py"), "-i", "js",
         "--tcp", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{port}", "--uds", str(sock)],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        assert "listening on" in server.stdout.readline()
        for url in (f"tcp://127.0.0.1:{port}", f"udp://127.0.0.1:{port}", f"uds://{sock}"):
            result = subprocess.run([node, str(ROOT / "examples" / "echo" / "echo_client.mjs"), url, "hi from node"],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.strip() == f"{url}: hi from node"
        # A refused request: exit status 1 and the reason, as echo_client.py does.
        server.terminate()
        assert server.wait(timeout=10) == 0
        result = subprocess.run([node, str(ROOT / "examples" / "echo" / "echo_client.mjs"), f"tcp://127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "failed:" in result.stdout, result.stdout + result.stderr
    finally:
        if server.poll() is None:
            server.kill()
