"""The gRPC contract cannot break unnoticed: `buf breaking` against the released descriptor fails on
the kind of change that once broke gateways silently (EvaluateResponse field 1 retyped), and passes
an added field; `buf lint` passes the proto as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = Path(os.environ.get("ABGUARD_BUF_DIR", Path.home() / ".cache" / "abguard" / "buf")) / "node_modules/.bin/buf"
RELEASED = ROOT / "protos" / "released" / "abguard-v1.binpb"
PROTO = Path("engine/api/v1/risk.proto")


@pytest.fixture
def buf() -> Path:
    if not BUF.exists():
        pytest.skip("buf is not installed: run .ci/deps/buf.sh (npm @bufbuild/buf)")
    return BUF


def changed(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of protos/ with one edit to the proto."""
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy, ignore=shutil.ignore_patterns("released"))
    text = (copy / PROTO).read_text()
    assert old in text, old
    (copy / PROTO).write_text(text.replace(old, new, 1))
    return copy


def breaking(buf: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    command = [str(buf), "breaking", "--against", str(RELEASED)]
    return subprocess.run(command, check=False, cwd=folder, capture_output=True, text=True, timeout=120)


def test_the_proto_lints_and_matches_the_released_api(buf: Path) -> None:
    for command in (["lint"], ["breaking", "--against", str(RELEASED)]):
        done = subprocess.run(
            [str(buf), *command], check=False, cwd=ROOT / "protos", capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_retyped_field_is_a_breaking_change(buf: Path, tmp_path: Path) -> None:
    folder = changed(tmp_path, "  Decision decision = 1;\n}", "  string decision = 1;\n}")
    done = breaking(buf, folder)
    assert done.returncode != 0
    assert 'Field "1" with name "decision" on message "EvaluateResponse" changed type' in done.stdout, done.stdout


def test_a_renumbered_field_is_a_breaking_change(buf: Path, tmp_path: Path) -> None:
    folder = changed(tmp_path, "  Decision decision = 1;\n}", "  Decision decision = 2;\n}")
    assert breaking(buf, folder).returncode != 0


def test_an_added_field_is_not(buf: Path, tmp_path: Path) -> None:
    folder = changed(tmp_path, "  Decision decision = 1;\n}", "  Decision decision = 1;\n  string added = 2;\n}")
    done = breaking(buf, folder)
    assert done.returncode == 0, done.stdout + done.stderr


def test_version_names_the_package_the_apis_and_the_policy_schema() -> None:
    import json
    import re
    import tomllib

    abguard = [str(ROOT / ".venv/bin/abguard"), "--version"]
    done = subprocess.run(abguard, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    proto = re.search(r"^package ([\w.]+);", (ROOT / "protos" / PROTO).read_text(), re.MULTILINE)
    schema = json.loads((ROOT / "policies/schema/risk-policy.schema.json").read_text())
    assert proto is not None
    want = (
        f"abguard {package}; gRPC API {proto.group(1)}; HTTP API 1.0.0; "
        f"policy schema {schema['properties']['apiVersion']['const']}"
    )
    assert done.stdout.strip() == want
