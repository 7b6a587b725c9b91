"""The echo tour: start the echo server on TCP, UDP and UDS, talk to it over all three, stop it.

Everything runs in a fresh temporary directory; nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP and UDP port that is free right now on 127.0.0.1."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def main() -> int:
    """Run the demo; return the process exit code."""
    run_dir = Path(tempfile.mkdtemp(prefix="ecosys-demo-"))
    env = dict(os.environ, ECOENV_DEFAULT_DIR=str(run_dir), PYTHONUNBUFFERED="1")
    port = free_port()
    server_cmd = [sys.executable, str(HERE / "echo_server.py"), "-i", "demo",
                  "--tcp", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{port}", "--uds", "DEFAULT"]
    print("$", " ".join(server_cmd[1:]))
    server = subprocess.Popen(server_cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        banner = server.stdout.readline().strip()
        if not banner:
            print("the echo server did not start", file=sys.stderr)
            return 1
        print(f"  {banner}")
        urls = [f"tcp://127.0.0.1:{port}", f"udp://127.0.0.1:{port}",
                f"uds://{run_dir / 'echo_server_demo.uds.sock'}"]
        failures = 0
        for script in ("echo_client.py", "sender_client.py"):
            for url in urls:
                text = f"hello over {url.split(':')[0].upper()} from {script}"
                result = subprocess.run(
                    [sys.executable, str(HERE / script), url, text],
                    env=env, capture_output=True, text=True, timeout=30,
                )
                print(f"  {script:17} -> {result.stdout.strip() or result.stderr.strip()}")
                failures += result.returncode != 0
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=15)
        print(f"echo server stopped with exit code {code}")
        log_file = run_dir / "echo_server-demo.log"
        lines = log_file.read_text().splitlines() if log_file.exists() else []
        print(f"its log ({log_file}), every line tagged with the request uid:")
        for line in lines[-8:]:
            print("  " + line)
        if failures or code != 0:
            print(f"demo FAILED ({failures} client failure(s))", file=sys.stderr)
            return 1
        print("demo OK: TCP, UDP and UDS all answered.")
        return 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
