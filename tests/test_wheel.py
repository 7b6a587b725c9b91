"""The wheel, installed into a fresh virtual environment, works away from the source tree.

Builds a wheel from (a copy of) this repository, installs it with pip into a new
venv (its dependencies come from the package registry), then, from a directory
outside the source tree and without PYTHONPATH: imports ecosys from the venv,
runs ``eco --help``, checks that py.typed is installed, and runs the echo
example server and client against each other over TCP.

Marked ``slow`` (tens of seconds): ``pytest -m 'not slow'`` leaves it out.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Not copied for the build: the venv, VCS data, build output, caches.
_TOP_LEVEL_SKIP = {".venv", ".git", "build", "dist", "site", "run", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    # Compiled modules of a `make compiled` tree too: the wheel is built from source.
    skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".so"))}
    if Path(directory).resolve() == ROOT:
        skip |= _TOP_LEVEL_SKIP & set(names)
    return skip


def _build_backend_installed() -> bool:
    """True when this environment has every [build-system] requirement, so no isolation is needed."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return False
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def _run(cmd: list[str | Path], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


def _build_wheel(out_dir: Path, work: Path) -> Path:
    """Build the wheel from a copy of the repository (no build/ or egg-info left in the tree)."""
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_ignore, symlinks=True)
    if _build_backend_installed():
        cmd: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                 "--disable-pip-version-check", "-w", out_dir, source]
    elif importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", out_dir, source]
    else:  # an isolated build: pip fetches the build backend from the package registry
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "-w", out_dir, source]
    result = _run(cmd, timeout=300)
    assert result.returncode == 0, f"building the wheel failed: {' '.join(map(str, cmd))}\n{_explain(result)}"
    wheels = sorted(out_dir.glob("ecosys-*.whl"))
    assert len(wheels) == 1, f"expected one ecosys wheel in {out_dir}, found {wheels}"
    return wheels[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line *proc* prints on stdout, or "" if none comes within *timeout* seconds."""
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None

    def read() -> None:
        lines.append(stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(ROOT), f"{tmp_path} must be outside the source tree {ROOT}"
    wheel = _build_wheel(tmp_path / "wheelhouse", tmp_path)

    venv = tmp_path / "venv"
    result = _run([sys.executable, "-m", "venv", venv], timeout=120)
    assert result.returncode == 0, f"creating a venv failed\n{_explain(result)}"
    python, eco = venv / "bin" / "python", venv / "bin" / "eco"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1", NO_COLOR="1")
    result = _run([python, "-m", "pip", "install", "--quiet", wheel], timeout=300, env=env)
    if result.returncode != 0:
        pytest.fail(
            "pip could not install the wheel into a fresh venv. Its dependencies come from the package "
            "registry (PyPI): is it reachable from here (network, proxy, PIP_INDEX_URL)?\n" + _explain(result),
            pytrace=False,
        )

    # Everything below runs from a directory outside the source tree.
    work = tmp_path / "work"
    work.mkdir()

    # ecosys (and every subpackage) imports from the venv, with the version the metadata declares.
    probe = (
        "import importlib.metadata, ecosys, ecosys.cli, ecosys.queues, ecosys.telemetry, ecosys.transport; "
        "print(ecosys.__file__); print(ecosys.__version__); print(importlib.metadata.version('ecosys'))"
    )
    result = _run([python, "-c", probe], timeout=60, cwd=work, env=env)
    assert result.returncode == 0, _explain(result)
    init_file, version, dist_version = result.stdout.split()
    assert Path(init_file).resolve().is_relative_to(venv.resolve()), f"ecosys imported from {init_file}, not {venv}"
    assert version == dist_version, f"ecosys.__version__ {version} != installed metadata {dist_version}"
    assert (Path(init_file).parent / "py.typed").is_file(), "py.typed is not installed next to ecosys/__init__.py"

    # The console script.
    result = _run([eco, "--help"], timeout=60, cwd=work, env=env)
    assert result.returncode == 0, _explain(result)
    for command in ("stats", "errors", "queue", "send", "metrics"):
        assert command in result.stdout, f"'eco --help' does not mention {command!r}:\n{result.stdout}"
    result = _run([eco, "--version"], timeout=60, cwd=work, env=env)
    assert result.returncode == 0 and result.stdout.strip() == f"eco (ecosys {version}, pure Python)", _explain(result)

    # The echo example, run with the venv's python from copies of its scripts.
    for script in (ROOT / "examples" / "echo").glob("*.py"):
        shutil.copy(script, work / script.name)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env["ECOENV_DEFAULT_DIR"] = str(run_dir)
    port = _free_port()
    server_err = tmp_path / "echo_server.stderr"
    with server_err.open("w") as err:
        server = subprocess.Popen(
            [str(python), "echo_server.py", "-i", "wheel", "--tcp", f"127.0.0.1:{port}"],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
    try:
        banner = _first_line(server, timeout=60)
        assert f"listening on tcp://127.0.0.1:{port}" in banner, (
            f"the echo server did not start (banner {banner!r}); stderr:\n{server_err.read_text()}"
        )
        url = f"tcp://127.0.0.1:{port}"
        result = _run([python, "echo_client.py", url, "hello from the wheel"], timeout=60, cwd=work, env=env)
        assert result.returncode == 0, _explain(result)
        assert f"{url}: hello from the wheel" in result.stdout, _explain(result)

        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        assert code == 0, f"the echo server exited with {code} on SIGTERM; stderr:\n{server_err.read_text()}"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
