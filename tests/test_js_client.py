"""The JavaScript client (clients/js) passes its own test suite against a real service.

Runs ``node --test`` on clients/js/test/*.test.js with ``ECOSYS_PYTHON`` set to
this interpreter, so the JS tests start clients/js/test/server.py with the
ecosys under test. Node.js 18 or newer must be on PATH (``make test`` installs
it where it can); without it this test fails rather than skips, so a CI
machine that lost node does not go green silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "clients" / "js"
MIN_NODE = 18
TIMEOUT = 120


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node (Node.js >= 18) is not on PATH, so the JavaScript client cannot be tested. "
            "`make system-deps` installs it where it can (root or passwordless sudo, with apt); "
            "otherwise install Node.js 18 or newer by hand.",
            pytrace=False,
        )
    return node


@pytest.mark.timeout(TIMEOUT + 30)
def test_js_client_suite() -> None:
    node = _node()
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.match(r"v(\d+)\.", version.stdout.strip())
    assert match is not None, f"cannot read the Node.js version from {version.stdout!r} {version.stderr!r}"
    assert int(match.group(1)) >= MIN_NODE, (
        f"Node.js {version.stdout.strip()} is too old for the JavaScript client; it needs {MIN_NODE} or newer"
    )
    # Explicit files rather than the directory: `node --test DIR` works on Node 18
    # and 20 but not on 21+, where arguments are glob patterns.
    test_files = sorted(str(p.relative_to(ROOT)) for p in (JS_DIR / "test").glob("*.test.js"))
    assert test_files, f"no *.test.js files in {JS_DIR / 'test'}"
    env = dict(os.environ, ECOSYS_PYTHON=sys.executable)
    try:
        result = subprocess.run(
            [node, "--test", *test_files], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"node --test did not finish within {TIMEOUT} s\n{output[-20000:]}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"node --test exited with {result.returncode}\n--- stdout\n{result.stdout[-20000:]}"
            f"\n--- stderr\n{result.stderr[-5000:]}",
            pytrace=False,
        )
    summary = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", result.stdout, re.MULTILINE))
    assert summary.get("fail") == "0" and int(summary.get("pass", "0")) > 0, result.stdout[-5000:]


# --- Regression checks run as standalone node scripts -----------------------------
#
# Each script prints one JSON line as its last output; a script that does not
# exit on its own within SCRIPT_TIMEOUT fails the test, since a client that
# reopens itself after close() keeps Node running.

SCRIPT_TIMEOUT = 30
CLIENT = json.dumps((JS_DIR / "index.js").as_uri())


@pytest.fixture(scope="module")
def service() -> Iterator[dict[str, Any]]:
    """clients/js/test/server.py on free TCP and UDP ports and a UDS path."""
    directory = Path(tempfile.mkdtemp(prefix="ecojs-"))  # short: a UDS path must fit ~108 bytes
    out = directory / "stdout.txt"
    with out.open("w") as stdout, (directory / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(JS_DIR / "test" / "server.py"), "-i", "jstest",
             "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--uds", str(directory / "s.sock")],
            env=dict(os.environ, ECOENV_DEFAULT_DIR=str(directory)), stdout=stdout, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        banner = ""
        while "\n" not in banner:
            assert process.poll() is None, f"the service exited: {(directory / 'stderr.txt').read_text()}"
            assert time.monotonic() < deadline, "the service printed no banner within 30 s"
            time.sleep(0.05)
            banner = out.read_text()
        urls = re.search(r" listening on (.*); log ", banner.splitlines()[0])
        assert urls is not None, banner
        found: dict[str, Any] = {"uds": str(directory / "s.sock")}
        for url in urls.group(1).split(", "):
            address = re.match(r"^(tcp|udp)://(.*):([0-9]+)$", url)
            if address is not None:
                found[address.group(1)] = {"host": address.group(2), "port": int(address.group(3))}
        yield found
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _run_script(tmp_path: Path, script: str, argument: Any = None) -> Any:
    path = tmp_path / "check.mjs"
    path.write_text(script.replace("CLIENT", CLIENT))
    try:
        result = subprocess.run(
            [_node(), str(path), json.dumps(argument)], capture_output=True, text=True,
            timeout=SCRIPT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the node script did not exit within {SCRIPT_TIMEOUT} s: {exc.stdout!r}", pytrace=False)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# The fake server answers every request but the first, A: it closes its socket
# after reading A (so A ran) and reopens 200 ms later. B, sent meanwhile, draws
# ICMP "port unreachable", which does not say which datagram it refused.
UDP_UNREACHABLE = """
import dgram from 'node:dgram';
import { UdpClient } from CLIENT;
const seen = [];
let server;
let port = 0;
const open = () => new Promise((resolve) => {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (message, peer) => {
    const request = JSON.parse(message.toString());
    seen.push(request.data.tag);
    if (seen.length === 1) {
      socket.close();
      setTimeout(async () => { server = await open(); }, 200);
      return;
    }
    socket.send(JSON.stringify({ uid: request.uid, status: 0, data: 'done' }) + '\\n', peer.port, peer.address);
  });
  socket.bind(port, '127.0.0.1', () => resolve(socket));
});
server = await open();
port = server.address().port;
const client = new UdpClient({
  host: '127.0.0.1', port, retryOnTimeout: false, retryDelay: 300, timeout: 2000,
});
const settle = (promise) => promise.then((value) => ({ value }), (e) => ({ error: e.name, message: e.message }));
const a = settle(client.request('charge', { tag: 'A' }));
await new Promise((resolve) => setTimeout(resolve, 50));
const b = settle(client.request('charge', { tag: 'B' }));
const results = { a: await a, b: await b };
await new Promise((resolve) => setTimeout(resolve, 500));  // time for any resend to arrive
await client.close();
server.close();
console.log(JSON.stringify({ ...results, seen }));
"""


def test_js_udp_unreachable_with_several_in_flight_is_not_resent(tmp_path: Path) -> None:
    result = _run_script(tmp_path, UDP_UNREACHABLE)
    for name in ("a", "b"):
        assert result[name].get("error") == "ConnectionLost", result
        assert "may have been processed" in result[name]["message"], result
    assert result["seen"].count("A") == 1, f"A ran on the server and was sent again: {result}"


# A fake TCP server records every line written to it: nothing may arrive
# after close(), which is called while the connection is still opening.
CLOSE_WHILE_CONNECTING = """
import net from 'node:net';
import * as ecosys from CLIENT;
const { TcpClient } = ecosys;
const received = [];
const server = net.createServer((socket) => {
  socket.on('data', (data) => received.push(String(data).trim()));
  socket.on('error', () => {});
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const results = {};
for (const persistent of [true, false]) {
  const client = new TcpClient({ host: '127.0.0.1', port: server.address().port, persistent, retryDelay: 0 });
  const pending = client.request('orders.place', { persistent }).then(
    () => ({ value: 'answered' }),
    (e) => ({ error: e.name, isClientClosed: ecosys.ClientClosed !== undefined && e instanceof ecosys.ClientClosed, message: e.message }));
  await client.close();
  results[persistent ? 'persistent' : 'perRequest'] = await pending;
}
await new Promise((resolve) => setTimeout(resolve, 300));
server.close();
console.log(JSON.stringify({ results, received }));
"""


def test_js_close_while_connecting_fails_waiters_and_writes_nothing(tmp_path: Path) -> None:
    result = _run_script(tmp_path, CLOSE_WHILE_CONNECTING)
    for outcome in result["results"].values():
        assert outcome.get("error") == "ClientClosed" and outcome["isClientClosed"], result
        assert "closed while connecting" in outcome["message"], result
    assert result["received"] == [], f"requests written after close(): {result}"


# Against the real service: a request waiting behind another with the same
# uid, and a request sleeping before its retry, when close() is called.
CLOSE_WITH_WAITERS = """
import { TcpClient, UdpClient, newUid } from CLIENT;
const { tcp, udp, deadPort } = JSON.parse(process.argv[2]);
const settle = (promise) => promise.then((value) => ({ value }), (e) => ({ error: e.name, message: e.message }));
const after = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const results = {};
for (const [name, client] of [['tcp', new TcpClient(tcp)], ['udp', new UdpClient({ ...udp, retryOnTimeout: false })]]) {
  let opened = 0;
  client.on('connect', () => { opened += 1; });
  const uid = newUid();
  const first = settle(client.request('sleep', { seconds: 0.3, tag: 'first' }, { uid }));
  const second = settle(client.request('sleep', { seconds: 0.3, tag: 'second' }, { uid }));
  await after(100);
  await client.close();
  results[name] = { first: await first, second: await second };
  await after(500);
  results[name].reopened = name === 'tcp' ? opened > 1 || client.connected : client._endpoint !== null;
  // Used again after close() returned, it reconnects.
  results[name].again = await settle(client.request('echo', { message: 'again' }));
  await client.close();
}
for (const [name, client] of [
  ['tcpRetry', new TcpClient({ host: '127.0.0.1', port: deadPort, retryDelay: 2000 })],
  ['udpRetry', new UdpClient({ host: '127.0.0.1', port: deadPort, retryDelay: 2000 })],
]) {
  const started = Date.now();
  const pending = settle(client.request('echo', { message: 'x' }));
  await after(200);
  await client.close();
  results[name] = { ...await pending, ms: Date.now() - started };
}
console.log(JSON.stringify(results));
"""


def test_js_close_fails_waiting_requests_without_reopening(tmp_path: Path, service: dict[str, Any]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # bound, not listening: connections are refused
        result = _run_script(tmp_path, CLOSE_WITH_WAITERS, {**service, "deadPort": dead_port})
    for name in ("tcp", "udp"):
        for which in ("first", "second"):
            outcome = result[name][which]
            assert outcome.get("error") == "ClientClosed", (name, which, result)
            assert outcome["message"] == "the client was closed while waiting for a response", result
        assert result[name]["reopened"] is False, f"{name}: the client reopened itself after close(): {result}"
        assert result[name]["again"] == {"value": {"message": "again"}}, result
    for name in ("tcpRetry", "udpRetry"):
        assert result[name].get("error") == "ClientClosed", (name, result)
        assert result[name]["ms"] < 1500, f"{name}: close() did not end the retry delay: {result}"


URLS = """
import { clientFromUrl } from CLIENT;
const outcomes = {};
for (const url of JSON.parse(process.argv[2])) {
  try {
    outcomes[url] = clientFromUrl(url).url;
  } catch (e) {
    outcomes[url] = e.name;
  }
}
console.log(JSON.stringify(outcomes));
"""


def test_js_client_from_url_refuses_what_python_refuses(tmp_path: Path) -> None:
    bad = [
        "uds:///tmp/s.sock#2", "uds:///tmp/a?b.sock", "tcp://127.0.0.1:8888?x=1", "udp://127.0.0.1:8888#f",
        "tcp://127.0.0.1:8888/some/path", "udp://h:1/x", "tcp://user@127.0.0.1:8888", "udp://u:p@h:1",
        "tcp://127.0.0.1:0", "tcp://127.0.0.1:99999", "udp://[::1]:65536", "tcp://127.0.0.1:",
    ]
    good = {
        "tcp://127.0.0.1:8888": "tcp://127.0.0.1:8888", "tcp://Example.COM:80/": "tcp://example.com:80",
        "udp://[::1]:65535": "udp://[::1]:65535", "uds:///tmp/s.sock": "uds:///tmp/s.sock",
    }
    outcomes = _run_script(tmp_path, URLS, [*bad, *good])
    assert {url: outcomes[url] for url in bad} == dict.fromkeys(bad, "TypeError")
    assert {url: outcomes[url] for url in good} == good
