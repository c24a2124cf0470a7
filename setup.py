"""Build hook: the per-snapshot core compiled to C by mypyc when ABGUARD_MYPYC=1.

Every evaluation runs the same few thousand lines (engine/compiled.py lists their modules);
interpreted, they are most of an evaluation's cost. mypyc compiles exactly those modules
from their typed source, unchanged: the .py files stay the
reference, and without ABGUARD_MYPYC (a plain `pip install`) abguard is pure Python and decides
the same (tests/test_compiled.py). `make install` and the Dockerfile build it compiled.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def extensions() -> list[Any]:  # setuptools or distutils Extension objects, as mypycify makes them
    if os.environ.get("ABGUARD_MYPYC") != "1":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415  # only at build time, and only when asked for

    listing = runpy.run_path(str(ROOT / "engine" / "compiled.py"))  # not imported: engine needs its dependencies
    paths = [str(path.relative_to(ROOT)) for path in listing["sources"](ROOT / "engine")]
    # one shared library inside the package (engine/core__mypyc...so), not a hash-named one beside it
    return list(mypycify(paths, opt_level="3", debug_level="1", group_name="engine.core"))


setup(ext_modules=extensions())
