"""The compiled build: its module list, its staleness check, and that `make test` really runs it."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest
from purepython import compiled_module_names

from ecosys import build

ROOT = Path(__file__).resolve().parents[1]


def test_module_list_matches_setup_py() -> None:
    # setup.py compiles what ecosys.build reports on: the two lists must not drift apart.
    listed = compiled_module_names()
    assert listed, "no module list found in setup.py"
    assert listed == build.COMPILED_MODULES


def test_build_kind_is_all_or_nothing() -> None:
    kind = build.build_kind()
    assert kind in ("compiled", "pure Python"), f"a broken build: {build.compiled_modules()}"


@pytest.mark.skipif(os.environ.get("ECOSYS_EXPECT_COMPILED") != "1",
                    reason="only where the build is known to be compiled (make test sets it)")
def test_make_test_runs_the_compiled_build() -> None:
    assert build.build_kind() == "compiled", build.compiled_modules()
    assert build.stale_modules() == []


@pytest.mark.skipif(os.environ.get("ECOSYS_PURE") != "1",
                    reason="only in the pure run of make test (ECOSYS_PURE=1)")
def test_ecosys_pure_loads_every_module_from_source() -> None:
    assert build.build_kind() == "pure Python", build.compiled_modules()


def test_a_source_newer_than_its_compiled_module_is_stale(tmp_path: Path) -> None:
    compiled = tmp_path / "stream.cpython-313-x86_64-linux-gnu.so"
    source = tmp_path / "stream.py"
    compiled.write_bytes(b"")
    source.write_text("")
    now = time.time()
    os.utime(compiled, (now, now))
    os.utime(source, (now - 60, now - 60))
    assert not build.is_stale(compiled)
    os.utime(source, (now + 60, now + 60))  # edited after the build
    assert build.is_stale(compiled)
    # A source module is never stale, and a compiled one without its source (a wheel) is not either.
    assert not build.is_stale(source)
    source.unlink()
    assert not build.is_stale(compiled)


def test_compiled_modules_bind_each_except_name_to_one_exception_type() -> None:
    # mypyc gives a local name one type for the whole function: `except A as exc`
    # and later `except B as exc` make the compiled build raise TypeError on the
    # second path (Router.prepare did, on every validation error).
    offenders = []
    for name in build.COMPILED_MODULES:
        path = ROOT / "src" / (name.replace(".", "/") + ".py")
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            caught: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    caught.setdefault(node.name, set()).add(ast.unparse(node.type))
            offenders += [f"{name}.{function.name}: {var} catches {sorted(types)}"
                          for var, types in caught.items() if len(types) > 1]
    assert offenders == []
