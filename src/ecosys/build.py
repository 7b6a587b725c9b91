"""Which of ecosys's per-request modules run compiled (mypyc), and whether a build is stale.

An installation is either pure Python or has these modules compiled to C
extension modules from the same source (``ECOSYS_COMPILE=1``, see setup.py and
docs/performance.md). In a source tree the compiled file sits beside its
``.py`` and Python imports it first, so a source edited after the build would
be silently ignored: :func:`stale_modules` names such files.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# The same list as COMPILED_MODULES in setup.py (tests/test_build.py checks that).
COMPILED_MODULES = (
    "ecosys.protocol",
    "ecosys.routing",
    "ecosys.telemetry.stats",
    "ecosys.transport.client",
    "ecosys.transport.deadlines",
    "ecosys.transport.eager",
    "ecosys.transport.stream",
)

_EXTENSION_SUFFIXES = (".so", ".pyd")


def compiled_modules() -> dict[str, bool]:
    """Each per-request module and whether the running interpreter loaded it compiled."""
    return {name: _is_compiled(_file_of(name)) for name in COMPILED_MODULES}


def build_kind() -> str:
    """"compiled", "pure Python", or "partly compiled" (a broken build) for this installation."""
    states = set(compiled_modules().values())
    if states == {True}:
        return "compiled"
    if states == {False}:
        return "pure Python"
    return "partly compiled"


def stale_modules() -> list[str]:
    """Compiled modules whose source file beside them is newer than the compiled file."""
    return [name for name in COMPILED_MODULES if is_stale(_file_of(name))]


def is_stale(loaded: Path) -> bool:
    """True when *loaded* is a compiled module older than the ``.py`` of the same name beside it."""
    if not _is_compiled(loaded):
        return False
    # "stream.cpython-313-x86_64-linux-gnu.so" -> "stream.py"
    source = loaded.with_name(loaded.name.split(".", 1)[0] + ".py")
    try:
        return source.stat().st_mtime > loaded.stat().st_mtime
    except FileNotFoundError:
        return False  # an installed wheel may ship no sources


def _file_of(name: str) -> Path:
    return Path(importlib.import_module(name).__file__ or "")


def _is_compiled(path: Path) -> bool:
    return path.name.endswith(_EXTENSION_SUFFIXES)
