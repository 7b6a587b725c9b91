"""The tutorial's two services and client (examples/tutorial/) run as docs/tutorial.md says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from apphelpers import AppProcess, app_env, free_port, request_tcp, wait_until

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "examples" / "tutorial"
PAGE = ROOT / "docs" / "tutorial.md"
UID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_page_snippets_are_taken_from_the_files() -> None:
    page = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r'^```python title="(examples/tutorial/[\w.]+)"\n(.*?)^```$', page, re.M | re.S)
    assert {path for path, _ in blocks} == {
        "examples/tutorial/greeter.py", "examples/tutorial/front.py", "examples/tutorial/client.py"
    }
    for path, code in blocks:
        assert code in (ROOT / path).read_text(encoding="utf-8"), f"a snippet of {path} in {PAGE.name} differs"


def two_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def run_client(url: str, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TUTORIAL / "client.py"), url, name], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_greeter_front_and_client(tmp_path: Path) -> None:
    greeter_port, front_port = two_ports()
    env = app_env(ECOENV_DEFAULT_DIR=tmp_path, ECOENV_QUEUE_DIR=tmp_path / "queues",
                  GREETER_URL=f"tcp://127.0.0.1:{greeter_port}")
    greeter_args = ["-i", "0", "--tcp", f"127.0.0.1:{greeter_port}"]
    front_args = ["-i", "0", "--tcp", f"127.0.0.1:{front_port}"]
    front_log = tmp_path / "front-0.log"
    greeter_log = tmp_path / "greeter-0.log"

    with AppProcess(TUTORIAL / "greeter.py", greeter_args, env, tmp_path, label="greeter") as greeter, \
            AppProcess(TUTORIAL / "front.py", front_args, env, tmp_path, label="front") as front:
        greeter.wait_ready(probe_port=greeter_port)
        front.wait_ready(probe_port=front_port)

        result = run_client(f"tcp://127.0.0.1:{front_port}", "Ada", env)
        out = result.stdout
        assert result.returncode == 0, f"{out}\n{result.stderr}\n{front.describe()}\n{greeter.describe()}"
        welcome = re.search(rf"^Hello, Ada! Welcome to the front\. \(uid ({UID})\)$", out, re.M)
        signed = re.search(rf"^signature queued as uid ({UID}) \(\d+ waiting\)$", out, re.M)
        assert welcome and signed, out
        assert out.rstrip().endswith("guestbook: Ada"), out

        # One uid follows each request through both services' logs.
        welcome_uid, sign_uid = welcome.group(1), signed.group(1)
        assert wait_until(lambda: f"[{welcome_uid}] welcoming Ada" in front_log.read_text(), 5)
        assert wait_until(lambda: f"[{welcome_uid}] greeting Ada" in greeter_log.read_text(), 5)
        assert wait_until(lambda: f"[{sign_uid}] queued the signature of Ada" in front_log.read_text(), 5)
        assert wait_until(lambda: f"[{sign_uid}] Ada signed the guestbook" in greeter_log.read_text(), 5)

        stats = request_tcp(greeter_port, "eco.statistics.get", {"type": "current"})["data"]["current"]
        assert stats["custom"]["greeter"] == {"greetings": 1, "signatures": 1}
        assert stats["queued_handlers"]["greeter.sign"]["calls"] == 1

        # The greeter goes down: welcomes fail with 500, signatures wait on disk.
        assert greeter.terminate() == 0, greeter.describe()
        refused = request_tcp(front_port, "front.welcome", {"name": "Lin"})
        assert refused["status"] == 500 and "not reachable" in refused["data"]["message"], refused
        queued = request_tcp(front_port, "front.sign", {"name": "Lin"})
        assert queued["status"] == 0, queued
        lin_uid = queued["data"]["uid"]
        assert lin_uid == queued["uid"], "the message carries the uid of the request that queued it"

        def sender_state() -> dict:  # type: ignore[type-arg]
            return request_tcp(front_port, "eco.queued_sender.data", {"queue_route_key": "guestbook"})["data"]

        assert sender_state()["pending"] == 1
        assert wait_until(lambda: "queued_sender.guestbook.unreachable"
                          in request_tcp(front_port, "eco.error_states.get")["data"], 5)

        # It comes back: the waiting signature is delivered, the error state cleared.
        with AppProcess(TUTORIAL / "greeter.py", greeter_args, env, tmp_path, label="greeter2") as again:
            again.wait_ready(probe_port=greeter_port)
            assert wait_until(lambda: sender_state()["pending"] == 0, 15), sender_state()
            assert sender_state()["delivered"] == 2 and sender_state()["errors"] == 0
            assert request_tcp(front_port, "front.guestbook")["data"] == ["Ada", "Lin"]
            assert request_tcp(front_port, "eco.error_states.get")["data"] == {}
            # A name with a line break stays one signature, and the book stays readable.
            assert request_tcp(front_port, "front.sign", {"name": "Bob\nSmith"})["status"] == 0
            assert wait_until(lambda: request_tcp(front_port, "front.guestbook")["data"]
                              == ["Ada", "Lin", "Bob\nSmith"], 15)
            assert again.terminate() == 0, again.describe()
        assert front.terminate() == 0, front.describe()

    assert f"[{lin_uid}] Lin signed the guestbook" in greeter_log.read_text()
    book = (tmp_path / "queues" / "guestbook.txt").read_text().splitlines()
    assert [json.loads(line) for line in book][:2] == [{"uid": sign_uid, "name": "Ada"},
                                                       {"uid": lin_uid, "name": "Lin"}]
    assert len(book) == 3
