"""The locks agree with pyproject.toml: `make check` fails when they drift apart.

`make lock` ends with `lockcheck.py --stamp`, which writes into each lock the digest of what it was
compiled from (pyproject.toml's requires-python, dependencies, optional dependencies and build
requirements, and requirements/build.in). `lockcheck.py` (make check, tests/test_lock.py) then fails
when:

- a lock's digest is not that of today's pyproject.toml: a dependency was added, removed or changed
  without `make lock`, so `make install` (which installs the lock, then abguard with --no-deps) would
  not install what pyproject.toml asks for;
- a direct requirement is missing from its lock or pinned outside its range (a lock edited by hand);
- a pin has no hash (pip's --require-hashes would refuse the whole lock), or two locks pin one
  package at different versions (the image would run other code than CI tested).

The stamp needs only the standard library (it runs before any venv exists); the check needs
`packaging`, which the locks install.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# lock -> the pyproject extras whose requirements it must pin ("" is [project.dependencies])
LOCKS = {
    "requirements/runtime.lock": ("", "compile"),
    "requirements/dev.lock": ("", "compile", "dev"),
    "requirements/build.lock": (),
}
BUILD_IN = "requirements/build.in"
STAMP_PREFIX = "# lockcheck: compiled from pyproject.toml "
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _build_in(root: Path) -> list[str]:
    lines = (root / BUILD_IN).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def digest(root: Path) -> str:
    """sha256 of every input of `make lock`, in a canonical form: reformatting the TOML keeps it."""
    data = _project(root)
    project = data.get("project", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system.requires": data.get("build-system", {}).get("requires", []),
        "build.in": _build_in(root),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _without_project(lines: list[str], own: str) -> list[str]:
    """Drop the project itself from a lock: dev's "abguard[compile]" makes pip-compile list
    `abguard @ file:///...` (a path, unhashable, with a warning about it in the header). `make install`
    installs abguard on its own, `--no-deps -e .`."""
    kept: list[str] = []
    skipping = False
    for entry in lines:
        if entry.startswith("# WARNING: pip install will require the following package to be hashed."):
            continue
        if entry.startswith("# Consider using a hashable URL like"):
            continue
        if re.match(rf"^{re.escape(own)}(\[[^]]*\])? @ ", entry, re.IGNORECASE):
            skipping = True
            continue
        if skipping and entry.startswith((" ", "\t")):
            continue
        skipping = False
        kept.append(entry)
    return kept


def stamp(root: Path) -> None:
    """Write today's digest into each lock, below pip-compile's header (replacing an older stamp)."""
    line = STAMP_PREFIX + digest(root)
    own = normalize(_project(root).get("project", {}).get("name", ""))
    for name in LOCKS:
        path = root / name
        lines = [entry for entry in path.read_text().splitlines() if not entry.startswith(STAMP_PREFIX)]
        lines = _without_project(lines, own)
        lines = [entry for i, entry in enumerate(lines) if not (entry == "#" and i and lines[i - 1] == "#")]
        end = 0
        while end < len(lines) and lines[end].startswith("#"):
            end += 1
        lines[end:end] = ([] if end and lines[end - 1] == "#" else ["#"]) + [line]
        path.write_text("\n".join(lines) + "\n")


def pins(text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock."""
    found: dict[str, tuple[str, int]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        match = PIN.match(line)
        if match:
            current = normalize(match[1])
            found[current] = (match[2], 0)
        elif line.startswith("--hash=") and current:
            version, count = found[current]
            found[current] = (version, count + 1)
        elif not line.startswith(("--hash", "#")) and line:
            current = ""  # an option line (-c, --find-links): hashes below it belong to no pin
    return found


def check(root: Path) -> list[str]:
    from packaging.requirements import Requirement  # noqa: PLC0415  # only the check needs it

    problems: list[str] = []
    data = _project(root)
    project = data.get("project", {})
    own = normalize(project.get("name", ""))
    want = digest(root)
    locked: dict[str, dict[str, tuple[str, int]]] = {}
    for name, groups in LOCKS.items():
        path = root / name
        if not path.exists():
            problems.append(f"{name} is missing: run make lock")
            continue
        text = path.read_text()
        stamps = [line.removeprefix(STAMP_PREFIX) for line in text.splitlines() if line.startswith(STAMP_PREFIX)]
        if stamps != [want]:
            was = stamps[0] if stamps else "no stamp"
            problems.append(
                f"{name} was compiled from another pyproject.toml ({was}, now {want}): "
                "dependencies changed without make lock"
            )
        locked[name] = pins(text)
        required = [
            entry
            for group in groups
            for entry in (project.get("dependencies", []) if group == "" else project["optional-dependencies"][group])
        ]
        if not groups:  # build.lock: what builds the sdists and abguard
            required = _build_in(root) + data.get("build-system", {}).get("requires", [])
        for entry in required:
            req = Requirement(entry)
            key = normalize(req.name)
            if key == own:  # "abguard[compile]": the extra's requirements are listed on their own
                continue
            if key not in locked[name]:
                problems.append(f"{name}: {entry!r} (pyproject.toml) is not in the lock: run make lock")
                continue
            version = locked[name][key][0]
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{name}: {key}=={version} does not satisfy {entry!r} (pyproject.toml)")
        for key, (version, hashes) in locked[name].items():
            if hashes == 0:
                problems.append(f"{name}: {key}=={version} has no --hash: pip --require-hashes refuses the lock")
    dev = locked.get("requirements/dev.lock", {})
    for name, table in locked.items():  # the audit reads dev.lock alone: it must pin all the others pin
        problems += [
            f"{key} is in {name} but not in dev.lock: run make lock" for key in table if dev and key not in dev
        ]
    seen: dict[str, tuple[str, str]] = {}
    for name, table in locked.items():
        for key, (version, _) in table.items():
            if key in seen and seen[key][0] != version:
                problems.append(f"{key} is {seen[key][0]} in {seen[key][1]} but {version} in {name}: run make lock")
            seen.setdefault(key, (version, name))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stamp", action="store_true", help="write the digest into the locks (make lock)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (default: this checkout)")
    args = parser.parse_args(argv)
    if args.stamp:
        stamp(args.root)
        return 0
    problems = check(args.root)
    for problem in problems:
        print(f"lockcheck: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
