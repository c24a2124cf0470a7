"""requirements/lockcheck.py (make check): the locks cannot silently drift from pyproject.toml."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ["pyproject.toml", "requirements/build.in", "requirements/runtime.lock", "requirements/dev.lock",
         "requirements/build.lock"]  # fmt: skip


def _lockcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("abguard_lockcheck", ROOT / "requirements" / "lockcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lockcheck = _lockcheck()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_committed_locks_agree_with_pyproject() -> None:
    assert lockcheck.check(ROOT) == []


def test_a_dependency_added_without_make_lock_fails(project: Path) -> None:
    _edit(project / "pyproject.toml", '    "redis>=5.0",\n', '    "redis>=5.0",\n    "httpx>=0.27",\n')
    problems = lockcheck.check(project)
    assert any("runtime.lock was compiled from another pyproject.toml" in p for p in problems), problems
    assert any("runtime.lock: 'httpx>=0.27' (pyproject.toml) is not in the lock" in p for p in problems), problems
    assert any("dev.lock: 'httpx>=0.27' (pyproject.toml) is not in the lock" in p for p in problems), problems


def test_a_removed_or_changed_dependency_fails_even_when_every_pin_still_fits(project: Path) -> None:
    _edit(project / "pyproject.toml", '    "redis>=5.0",\n', "")
    assert any("dev.lock was compiled from another pyproject.toml" in p for p in lockcheck.check(project))


def test_a_range_the_pin_no_longer_satisfies_fails_even_if_restamped(project: Path) -> None:
    _edit(project / "pyproject.toml", '"pyyaml>=6.0"', '"pyyaml>=99"')
    lockcheck.stamp(project)  # the digest alone would pass: the pins are still checked against the ranges
    problems = lockcheck.check(project)
    assert any(re.search(r"runtime.lock: pyyaml==\S+ does not satisfy 'pyyaml>=99'", p) for p in problems), problems


def test_reformatting_pyproject_keeps_the_locks_current(project: Path) -> None:
    _edit(project / "pyproject.toml", '    "redis>=5.0",\n', '    # a comment\n    "redis>=5.0",   \n\n')
    assert lockcheck.check(project) == []


def test_a_pin_without_hashes_or_two_pins_of_one_package_fail(project: Path) -> None:
    dev = project / "requirements" / "dev.lock"
    text = dev.read_text()
    start = text.index("\npyyaml==") + 1
    end = text.index("\n", text.index("    # via", start))
    version = text[start:end].split("==")[1].split()[0]
    dev.write_text(text[:start] + "pyyaml==6.0.1\n" + text[end + 1 :])
    problems = lockcheck.check(project)
    assert "requirements/dev.lock: pyyaml==6.0.1 has no --hash: pip --require-hashes refuses the lock" in problems
    assert any(f"pyyaml is {version} in requirements/runtime.lock but 6.0.1 in" in p for p in problems), problems


def test_stamp_drops_the_project_itself_and_keeps_one_stamp(project: Path) -> None:
    dev = project / "requirements" / "dev.lock"
    header = "#\n# WARNING: pip install will require the following package to be hashed.\n"
    header += "# Consider using a hashable URL like https://example.invalid/x.zip\n#\n"
    dev.write_text(header + "abguard @ file:///somewhere\n    # via abguard (pyproject.toml)\n" + dev.read_text())
    lockcheck.stamp(project)
    lockcheck.stamp(project)
    text = dev.read_text()
    assert "abguard @" not in text
    assert "WARNING" not in text
    assert text.count(lockcheck.STAMP_PREFIX) == 1
    assert lockcheck.check(project) == []
