"""With ECOSYS_PURE=1, load ecosys's compiled modules from their .py sources instead.

Imported by conftest.py before ecosys itself, so that one tree with a compiled
build can also run tests against the pure Python build (`make test` does both:
the whole suite compiled, then the protocol, routing and client tests pure).
Python would otherwise always prefer the compiled file beside the source.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def compiled_module_names() -> tuple[str, ...]:
    """The modules setup.py compiles, in its order (read from it: ecosys must not be imported yet)."""
    listed = re.findall(r'^    "src/(ecosys/[\w/]+)\.py",$', (ROOT / "setup.py").read_text(),
                        re.MULTILINE)
    return tuple(path.replace("/", ".") for path in listed)


class SourceFirstFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules as source files, even where a compiled file sits beside them."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        for directory in path or sys.path:
            source = Path(directory) / (fullname.rpartition(".")[2] + ".py")
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


if os.environ.get("ECOSYS_PURE") == "1":
    if "ecosys" in sys.modules:
        raise RuntimeError("ECOSYS_PURE=1 must take effect before ecosys is imported")
    sys.meta_path.insert(0, SourceFirstFinder(compiled_module_names()))
