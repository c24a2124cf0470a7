"""`abguard demo` (what `make demo` runs) end to end: the real service, the scenarios through gRPC,
one rollback carried out with the gateway's reports, its flag and the alerts in the real Alertmanager."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_shows_a_rollback_carried_out_its_flag_and_its_alerts() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "abguard"), "demo"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"accuracy-regression\s+rollback_in_progress traffic 0%", out), out
    assert re.search(r"rollback \w+ of accuracy-regression: complete", out), out
    for phase in ("immediate", "safe_transition", "cleanup"):
        assert re.search(rf"^  {phase}\s+complete", out, re.MULTILINE), phase
    assert re.search(r"feature_flags\s+abguard\s+done", out)
    assert '"defaultVariant": "champion"' in out and "fractional" not in out.split("flag ff.challenger_")[1]
    assert "abguard serve stopped (exit 0)" in out
    assert re.search(r"risk dashboard: http://127\.0\.0\.1:\d+/", out)
    if not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")):
        pytest.skip("Alertmanager is not installed: run .ci/deps/alertmanager.sh (apt prometheus-alertmanager)")
    alerts = out.split("alerts Alertmanager holds for accuracy-regression")[1]
    assert re.search(r"AbguardRollback\s+severity=emergency condition=accuracy", alerts), alerts
    assert alerts.count("AbguardRollback ") == 1  # the decision's rollback alert, not a second one
