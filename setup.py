"""Build hook: with ECOSYS_COMPILE=1, compile the per-request modules with mypyc.

Everything else about the package lives in pyproject.toml. The compiled build
runs the same source, turned into C extension modules; without the variable
the package is pure Python and needs no C compiler. See docs/performance.md.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules every request passes through, on both the server and the client side.
COMPILED_MODULES = [
    "src/ecosys/protocol.py",
    "src/ecosys/routing.py",
    "src/ecosys/telemetry/stats.py",
    "src/ecosys/transport/client.py",
    "src/ecosys/transport/deadlines.py",
    "src/ecosys/transport/eager.py",
    "src/ecosys/transport/stream.py",
]


def compiled_extensions() -> list:
    """The mypyc extension modules, or none unless ECOSYS_COMPILE=1."""
    wanted = os.environ.get("ECOSYS_COMPILE", "").strip().lower()
    if wanted in ("", "0", "no", "false"):
        return []
    if wanted not in ("1", "yes", "true"):
        raise SystemExit(f"ECOSYS_COMPILE must be 1 or 0, not {wanted!r}")
    from mypyc.build import mypycify  # only needed for a compiled build

    return mypycify(
        COMPILED_MODULES,
        opt_level="3",
        # One shared support library for all of them, named for the package.
        group_name="ecosys",
    )


setup(ext_modules=compiled_extensions())
