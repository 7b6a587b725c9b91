"""The JavaScript client (clients/js) passes its own test suite against a real service.

Runs ``node --test`` on clients/js/test/*.test.js with ``ECOSYS_PYTHON`` set to
this interpreter, so the JS tests start clients/js/test/server.py with the
ecosys under test. Node.js 18 or newer must be on PATH (``make test`` installs
it where it can); without it this test fails rather than skips, so a CI
machine that lost node does not go green silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
