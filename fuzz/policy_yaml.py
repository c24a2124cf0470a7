"""atheris target: bytes as one file of a copy of policies/, loaded with the public loader (load_effective).

    .venv/bin/python -m fuzz.policy_yaml -max_total_time=60 -timeout=10 .fuzz/corpus/policy_yaml   # or `make fuzz`

The first byte picks the file the rest replaces (the base policy, a profile or an environment).
Invariants: a policy, or PolicyError whose every diagnostic names its file (and line, for YAML
findings); no other exception. A hang is libFuzzer's `-timeout` (make fuzz: 10 s), saved as a crash.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["engine", "fuzz", "yaml"]):
    from fuzz.invariants import POLICIES, check_policy_load

FILES = sorted(str(p.relative_to(POLICIES)) for p in POLICIES.rglob("*.yaml") if "tests" not in p.parts)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="abguard-fuzz-") as folder:
        root = Path(folder) / "policies"
        shutil.copytree(POLICIES, root, ignore=shutil.ignore_patterns("tests", "schema"))

        def test_one_input(data: bytes) -> None:
            if not data:
                return
            name = FILES[data[0] % len(FILES)]
            target = root / name
            target.write_bytes(data[1:])
            try:
                check_policy_load(root, "balanced", "prod" if data[0] & 0x80 else None)
            finally:
                target.write_bytes((POLICIES / name).read_bytes())

        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
