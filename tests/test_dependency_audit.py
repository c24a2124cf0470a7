"""requirements/audit.py (make audit, .ci/run): a known-vulnerable pin fails it, an unreachable service
fails it loudly unless ABGUARD_AUDIT_OFFLINE_OK=1, and a vulnerability is never excused by that switch.

The real pip-audit runs against a stand-in OSV service on loopback (CI's machine reaches no
vulnerability service): the stand-in answers with OSV's published record for requests < 2.20.0
(PYSEC-2018-28, CVE-2018-18074: the Authorization header sent on after a redirect to HTTP)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
AUDIT = ROOT / "requirements" / "audit.py"

# the real hashes of the two releases (PyPI), as pip-compile --generate-hashes writes them
VULNERABLE = """requests==2.19.0 \\
    --hash=sha256:421cfc8d9dde7d6aff68196420afd86b88c65d77d8da9cf83f4ecad785d7b9d6 \\
    --hash=sha256:cc408268d0e21589bcc2b2c248e42932b8c4d112f499c12c92e99e2178a6134c
"""
FIXED = """requests==2.32.3 \\
    --hash=sha256:55365417734eb18255590a9ff9eb97e9e1da868d4ccd6402399eaf68af20a760 \\
    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6
"""
PYSEC_2018_28 = {
    "schema_version": "1.6.0",
    "id": "PYSEC-2018-28",
    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
    "summary": "The Requests package before 2.20.0 sends an HTTP Authorization header to an http URI "
    "upon receiving a same-hostname https-to-http redirect",
    "published": "2018-10-09T17:29:00Z",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
}


class FakeOsv(BaseHTTPRequestHandler):
    queries: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOsv.queries.append(query)
        name, version = query["package"]["name"], Version(query["version"])
        body = {"vulns": [PYSEC_2018_28]} if name == "requests" and version < Version("2.20.0") else {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def osv() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOsv.queries = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _audit(lock: Path, osv_url: str, offline_ok: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABGUARD_AUDIT_")}
    env |= {"ABGUARD_AUDIT_SERVICES": "osv", "ABGUARD_AUDIT_OSV_URL": osv_url}
    if offline_ok:
        env["ABGUARD_AUDIT_OFFLINE_OK"] = "1"
    return subprocess.run(
        [sys.executable, str(AUDIT), "-r", str(lock), "--timeout", "5"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip


def test_a_known_vulnerable_pin_fails_the_audit_whatever_the_offline_switch(osv: str, tmp_path: Path) -> None:
    lock = tmp_path / "vulnerable.lock"
    lock.write_text(VULNERABLE)
    for offline_ok in (False, True):
        done = _audit(lock, osv, offline_ok)
        assert done.returncode == 1, done.stderr
        [line] = [line for line in done.stderr.splitlines() if "requests==2.19.0:" in line]
        assert line.strip().startswith("requests==2.19.0: PYSEC-2018-28, ")
        assert "CVE-2018-18074" in line
        assert line.endswith("(fixed in: 2.20.0)")
    assert FakeOsv.queries[-1] == {"package": {"name": "requests", "ecosystem": "PyPI"}, "version": "2.19.0"}


def test_a_pin_past_the_fix_passes(osv: str, tmp_path: Path) -> None:
    lock = tmp_path / "fixed.lock"
    lock.write_text(FIXED)
    done = _audit(lock, osv)
    assert done.returncode == 0, done.stderr
    assert "1 pins checked against osv: no known vulnerabilities" in done.stdout


def test_every_pin_of_the_dev_lock_is_asked_about(osv: str) -> None:
    done = _audit(ROOT / "requirements" / "dev.lock", osv)
    assert done.returncode == 0, done.stderr
    lock = (ROOT / "requirements" / "dev.lock").read_text()
    pinned = {line.split("==")[0] for line in lock.splitlines() if "==" in line and not line.startswith((" ", "#"))}
    assert {query["package"]["name"] for query in FakeOsv.queries} == pinned


def test_an_unreachable_service_fails_loudly_unless_the_offline_switch_is_set(tmp_path: Path) -> None:
    lock = tmp_path / "fixed.lock"
    lock.write_text(FIXED)
    url = f"http://127.0.0.1:{_closed_port()}/v1/query"
    done = _audit(lock, url)
    assert done.returncode == 2
    assert "audit: NOT DONE: no vulnerability service answered for every pin of fixed.lock" in done.stderr
    assert "ABGUARD_AUDIT_OFFLINE_OK=1 accepts" in done.stderr
    excused = _audit(lock, url, offline_ok=True)
    assert excused.returncode == 0
    assert "audit: NOT DONE" in excused.stderr
    assert "the locked dependencies were NOT audited" in excused.stderr


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("abguard_audit", AUDIT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_service_that_skips_pins_is_not_a_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What PyPI's service does here: its per-release JSON answers 404, and pip-audit reports each pin
    as 'not found on PyPI' with no vulnerabilities, exit 0. That is no audit."""
    audit = _module()
    skipped = {"name": "requests", "version": "2.19.0", "skip_reason": "Dependency not found on PyPI"}
    monkeypatch.setattr(audit, "run_service", lambda lock, service, timeout: ({"dependencies": [skipped]}, ""))
    monkeypatch.delenv("ABGUARD_AUDIT_OFFLINE_OK", raising=False)
    assert audit.audit(tmp_path / "x.lock", ["pypi"], 5) == 2
    monkeypatch.setenv("ABGUARD_AUDIT_OFFLINE_OK", "1")
    assert audit.audit(tmp_path / "x.lock", ["pypi"], 5) == 0
