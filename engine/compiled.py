"""Which modules mypyc compiles (setup.py builds them with ABGUARD_MYPYC=1), and whether this process runs them.

The compiled modules are built from the .py files beside them; a .py edited after its build is not
what runs, so `stale()` names such modules (tests/conftest.py refuses to test them, `make` rebuilds).
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib.machinery
import operator
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# what every evaluation runs through: the core in the order of the pipeline, the policy it reads,
# and the proto <-> contract conversion of each call
COMPILED = (
    "contract", "facts", "stats", "verdict", "pipeline.py", "rules/answers.py", "policy/model.py", "api/convert.py",
    "state",
)  # fmt: skip
PACKAGE = Path(__file__).resolve().parent


def sources(package: Path = PACKAGE) -> list[Path]:
    out: list[Path] = []
    for entry in COMPILED:
        path = package / entry
        out += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return out


def _built(source: Path) -> list[Path]:
    return [source.with_suffix(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if source.with_suffix(suffix).exists()]  # fmt: skip


def is_compiled() -> bool:
    """Whether the core this process runs is mypyc's build (else the .py files are interpreted)."""
    from . import pipeline  # noqa: PLC0415  # the core itself, only when asked: setup.py runs this file alone

    return not (pipeline.__file__ or "").endswith(".py")


def stale(package: Path = PACKAGE) -> list[str]:
    """Compiled modules whose source changed after the build, or that the build lacks (when anything is built).

    The code of every module is in one shared library (core__mypyc); a module's own extension file is
    a shim that loads it and is rewritten only when its name changes, so the library's time is the build's."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    library = [path for suffix in suffixes for path in package.glob(f"core__mypyc{suffix}")]
    built = {source: _built(source) for source in sources(package)}
    if not library and not any(built.values()):
        return []  # a pure-Python install: nothing compiled, nothing stale
    when = max((path.stat().st_mtime for path in library), default=0.0)
    root = package.parent
    behind = [source for source, files in built.items() if not files or source.stat().st_mtime > when]
    return [str(source.relative_to(root)) for source in behind]


def register_pickling() -> None:
    """Pickle every dataclass of the compiled modules as its class called with its fields, in both builds.

    A compiled frozen dataclass cannot be restored the default way (set attribute by attribute: it
    is frozen); `cls(*fields)` works in both builds. Only for values passed between abguard's own
    processes (multiprocessing): nothing read from a store is ever unpickled (engine/state).
    Called once the core is imported (engine/pipeline.py)."""
    prefixes = tuple(f"{__package__}.{entry.removesuffix('.py').replace('/', '.')}" for entry in COMPILED)
    for name, module in list(sys.modules.items()):
        if module is None or not (name in prefixes or name.startswith(tuple(f"{p}." for p in prefixes))):
            continue
        for value in vars(module).values():
            ours = isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == name
            if ours and "__reduce__" not in vars(value):  # a class's own __reduce__ (RollingSums) stands
                copyreg.pickle(value, _by_fields(value))


def _by_fields(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    # fields outside __init__ are derived by __post_init__ (Indicator.leaves), so calling the class rebuilds them
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    getter = operator.attrgetter(*names) if names else (lambda obj: ())

    if len(names) == 1:
        return lambda obj: (cls, (getter(obj),))
    return lambda obj: (cls, getter(obj))


if __name__ == "__main__":  # the Makefile's list of what the compiled build depends on
    print(*(path.relative_to(PACKAGE.parent) for path in sources()))
