"""The queue examples run as their documentation says: dice roller, and outbox -> inbox."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from apphelpers import AppProcess, app_env, free_port, request_tcp, wait_until

ROOT = Path(__file__).resolve().parents[1]
DICE = ROOT / "examples" / "dice_roller"
OUTBOX = ROOT / "examples" / "queued_sender"
CLIENT_TIMEOUT = 60


def run_script(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a client script to completion (killed on timeout, so nothing is left behind)."""
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=CLIENT_TIMEOUT, cwd=ROOT)


def test_dice_roller(tmp_path: Path) -> None:
    port = free_port()
    env = app_env(ECOENV_DEFAULT_DIR=tmp_path, ECOENV_QUEUE_DIR=tmp_path / "queues")
    # FUMBLE_CHANCE=1: every big batch with a 1 in it fails, so the error queue surely has entries.
    args = ["-i", "0", "--tcp", f"127.0.0.1:{port}", "--extra", "FUMBLE_CHANCE=1"]
    with AppProcess(DICE / "dice_server.py", args, env, tmp_path, label="dice") as server:
        server.wait_ready(probe_port=port)
        result = run_script(DICE / "dice_client.py", [f"tcp://127.0.0.1:{port}"], env)
        out = result.stdout
        assert result.returncode == 0, f"{out}\n{result.stderr}\n{server.describe()}"
        assert result.stderr == ""
        assert re.search(r"^roll d6: [1-6]$", out, re.M), out
        assert re.search(r"^roll d20: \d+$", out, re.M), out
        assert re.search(r"^guess 3 on a d6: rolled [1-6], the guess was (right|wrong)$", out, re.M), out
        assert "roll d1 refused with status 300" in out
        assert "queued 29 roll_times requests" in out and '{"uid": "' in out
        # The batch was worked through: nothing pending, the fumbled big batches in the error queue.
        errors = int(re.search(r'^\s+"errors": (\d+),$', out, re.M).group(1))  # type: ignore[union-attr]
        assert errors >= 10, out
        assert '"pending": 0' in out
        assert f"get_first_10: 10 of {errors} error(s) shown" in out
        # Mostly fumbles; a request whose first roll was a 1 four times running ends there too.
        assert out.count("  reason: ") == 10 and "reason: DiceFellOffTheTable: " in out, out
        assert "errors.inspect_request (the oldest one)" in out
        assert "inspecting an unknown uid: status 300: no request with uid" in out
        assert f"errors.reprocess.all: {{'reprocessed': {errors}}}" in out
        assert re.search(r"^after reprocessing: pending=0 errors=\d+", out, re.M), out
        assert out.rstrip().endswith("dice client done")
        assert server.terminate() == 0, server.describe()
    log = (tmp_path / "dice_server-0.log").read_text()
    assert re.search(r"rolled a d6 \d+ times: total \d+", log), "the queued handler logs its results"
    assert "DiceFellOffTheTable" in log
    names = sorted(p.name for p in (tmp_path / "queues").glob("*.sqlite"))
    assert names == ["dice_server-0-roll_times-endpoint-error.sqlite",
                     "dice_server-0-roll_times-endpoint-pending.sqlite"]


def test_dice_client_without_server(tmp_path: Path) -> None:
    result = run_script(DICE / "dice_client.py", [f"tcp://127.0.0.1:{free_port()}"], app_env())
    assert result.returncode == 1
    assert "cannot talk to the dice server" in result.stdout


def test_outbox_delivers_in_order_once_the_inbox_is_up(tmp_path: Path) -> None:
    outbox_port = free_port()
    inbox_port = free_port()
    while inbox_port == outbox_port:
        inbox_port = free_port()
    env = app_env(ECOENV_DEFAULT_DIR=tmp_path, ECOENV_QUEUE_DIR=tmp_path / "queues",
                  OUTBOX_INBOX_URL=f"tcp://127.0.0.1:{inbox_port}")
    outbox_args = ["-i", "0", "--tcp", f"127.0.0.1:{outbox_port}"]
    with AppProcess(OUTBOX / "outbox.py", outbox_args, env, tmp_path, label="outbox") as outbox:
        outbox.wait_ready(probe_port=outbox_port)
        sent = run_script(OUTBOX / "send_some.py", [f"tcp://127.0.0.1:{outbox_port}", "4"], env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        uids = dict(re.findall(r"^queued (\w+ #\d+) as uid ([0-9a-f-]{36})", sent.stdout, re.M))
        assert len(uids) == 12, sent.stdout
        assert '"delivered": 0' in sent.stdout and '"pending": 12' in sent.stdout
        assert "error state queued_sender.to_inbox.unreachable" in sent.stdout

        def state() -> dict:  # type: ignore[type-arg]
            return request_tcp(outbox_port, "eco.queued_sender.data", {"queue_route_key": "to_inbox"})["data"]

        assert state()["pending"] == 12, "the inbox is down: everything waits"

        with AppProcess(OUTBOX / "inbox_server.py", ["-i", "0", "--tcp", f"127.0.0.1:{inbox_port}"],
                        env, tmp_path, label="inbox") as inbox:
            inbox.wait_ready()
            got = [inbox.wait_for_output("inbox got ", timeout=15) for _ in range(12)]
            assert wait_until(lambda: state()["delivered"] == 12, 5), state()
            final = state()
            assert inbox.terminate() == 0, inbox.describe()
        assert outbox.terminate() == 0, outbox.describe()

    received = [re.match(r"inbox got (\w+) #(\d+): .* \(uid ([0-9a-f-]{36})\)$", line) for line in got]
    assert all(received), got
    by_customer: dict[str, list[int]] = {}
    for match in received:
        assert match is not None
        customer, seq, uid = match.group(1), int(match.group(2)), match.group(3)
        by_customer.setdefault(customer, []).append(seq)
        assert uids[f"{customer} #{seq}"] == uid, "the inbox sees the uid the outbox returned"
    assert by_customer == {c: [1, 2, 3, 4] for c in ("alice", "bob", "carol")}, got
    assert final["pending"] == 0 and final["errors"] == 0 and final["blocked_groups"] == []
