"""Known vulnerabilities in the locked dependencies: pip-audit over requirements/dev.lock (`make audit`, .ci/run).

dev.lock pins every package runtime.lock and build.lock pin, at the same versions (lockcheck.py), so
one audit covers the image and the development tools. pip-audit reads the pins and their hashes
(--require-hashes --no-deps --disable-pip: nothing is installed or resolved) and asks a vulnerability
service about each `name==version`.

Exit codes:
  0  every pin was checked and none has a known vulnerability
  1  a pin has a known vulnerability (listed, with the versions that fix it)
  2  the audit could not be done: no service answered for every pin (unreachable, or it skipped some)
     -- unless ABGUARD_AUDIT_OFFLINE_OK=1, which turns this case (and only this one) into 0 with the
     same loud message. A vulnerability found is never excused by it.

Services are tried in the order of ABGUARD_AUDIT_SERVICES (default "pypi osv": PyPI's per-release
JSON, then OSV's API; ABGUARD_AUDIT_OSV_URL points the second at another OSV-compatible server); the
first that answers for every pin decides. A pin the service skipped ("not found on PyPI") counts as
unanswered: every pin in the locks comes from PyPI with its hashes, so a skip means the service
did not answer, not that the package has no advisories.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCK = ROOT / "requirements" / "dev.lock"
OFFLINE_OK = "ABGUARD_AUDIT_OFFLINE_OK"


def run_service(lock: Path, service: str, timeout: int) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report for one service, or None and why there is none."""
    with tempfile.TemporaryDirectory(prefix="abguard-audit-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip_audit",
            "--requirement", str(lock), "--require-hashes", "--no-deps", "--disable-pip",
            "--vulnerability-service", service, "--timeout", str(timeout),
            "--progress-spinner", "off", "--format", "json", "--output", str(report),
            "--cache-dir", str(Path(tmp) / "cache"),
        ]  # fmt: skip
        osv_url = os.environ.get("ABGUARD_AUDIT_OSV_URL")
        if service == "osv" and osv_url:
            command += ["--osv-url", osv_url]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1) or not report.exists():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return None, lines[-1] if lines else f"pip-audit exited {done.returncode}"
        parsed: dict[str, Any] = json.loads(report.read_text())
        return parsed, ""


def audit(lock: Path, services: list[str], timeout: int) -> int:
    failures: list[str] = []
    for service in services:
        report, why = run_service(lock, service, timeout)
        if report is None:
            failures.append(f"{service}: {why}")
            continue
        deps = report.get("dependencies", [])
        vulnerable = [dep for dep in deps if dep.get("vulns")]
        if vulnerable:  # definitive, whatever else the service skipped
            print(f"audit: {lock.name}: known vulnerabilities ({service}):", file=sys.stderr)
            for dep in vulnerable:
                for vuln in dep["vulns"]:
                    ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
                    fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
                    print(f"  {dep['name']}=={dep['version']}: {ids} (fixed in: {fixed})", file=sys.stderr)
            print("audit: move the pin with `make lock UPGRADE=name` (README, Supply chain)", file=sys.stderr)
            return 1
        skipped = [dep for dep in deps if "skip_reason" in dep]
        if deps and not skipped:
            print(f"audit: {lock.name}: {len(deps)} pins checked against {service}: no known vulnerabilities")
            return 0
        reason = skipped[0]["skip_reason"] if skipped else "no dependencies in the report"
        failures.append(f"{service}: answered for {len(deps) - len(skipped)} of {len(deps)} pins ({reason})")
    banner = "!" * 78
    print(banner, file=sys.stderr)
    print(f"audit: NOT DONE: no vulnerability service answered for every pin of {lock.name}:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    if os.environ.get(OFFLINE_OK) == "1":
        print(f"audit: {OFFLINE_OK}=1: not failing; the locked dependencies were NOT audited", file=sys.stderr)
        print(banner, file=sys.stderr)
        return 0
    print(f"audit: failing (exit 2); {OFFLINE_OK}=1 accepts an audit that cannot reach a service", file=sys.stderr)
    print(banner, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-r", "--requirement", type=Path, default=DEFAULT_LOCK, help="a hashed lock (dev.lock)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request (default 15)")
    args = parser.parse_args(argv)
    services = os.environ.get("ABGUARD_AUDIT_SERVICES", "pypi osv").split()
    return audit(args.requirement, services, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
