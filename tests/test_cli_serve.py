"""The serve/evaluate command line and the service's event log, as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.api.servicer import create_server
from engine.policy import load_effective
from engine.service import Guard, RebuildingError
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent

# Sixteen threads log at once into a real pipe, each line larger than the pipe's atomic size.
CONCURRENT_LOGGER = """
import sys, threading
from engine.cli.logging import log_event

def work(thread):
    for n in range(400):
        log_event({"event": "decision", "thread": thread, "n": n, "pad": "x" * (n % 7 * 1500)})

threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_event_log_lines_stay_whole_under_concurrency() -> None:
    """Many threads logging at once through log_event give only whole JSON lines, one object each."""
    done = subprocess.run(
        [sys.executable, "-c", CONCURRENT_LOGGER], cwd=ROOT, capture_output=True, timeout=60, check=True
    )
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 16 * 400
    seen = {(event["thread"], event["n"]) for event in map(json.loads, lines)}  # each line is one object
    assert len(seen) == 16 * 400


def test_event_log_survives_a_closed_stdout() -> None:
    """With stdout closed, logging drops the line quietly instead of raising into the caller."""
    code = (
        "import os, sys\nos.close(1)\nfrom engine.cli.logging import log_event\n"
        "log_event({'a': 1})\nprint('ok', file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().strip() == "ok"


def abguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "abguard"), *args]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})}
    )


def test_a_bad_workers_variable_is_serve_s_usage_error_only(tmp_path: Path) -> None:
    """ABGUARD_WORKERS=abc: `serve` exits 2 naming ABGUARD_WORKERS and --workers; other verbs still work."""
    bad = {"ABGUARD_WORKERS": "abc"}
    done = abguard("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), env=bad)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        "abguard serve: error: argument --workers: must be a whole number >= 1, got 'abc'"
        " (from --workers or ABGUARD_WORKERS)" in done.stderr
    )
    assert not (tmp_path / "data").exists()
    assert abguard("--help", env=bad).returncode == 0
    assert abguard("policy", "validate", "policies", env=bad).returncode == 0
    assert abguard("health", "--server", "127.0.0.1:1", "--timeout", "0.5", env=bad).returncode == 1


def test_zero_workers_is_a_usage_error(tmp_path: Path) -> None:
    """--workers 0 is refused by argparse (exit 2), not a traceback from the thread pool."""
    done = abguard("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--workers", "0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "argument --workers: must be a whole number >= 1, got '0'" in done.stderr


def test_serve_names_a_missing_policy_folder(tmp_path: Path) -> None:
    """serve --policies /missing: one line naming the path, exit 2, no data folder made."""
    missing = tmp_path / "missing"
    done = abguard("serve", "--data-dir", str(tmp_path / "data"), "--policies", str(missing))
    assert done.returncode == 2
    assert done.stderr == f"abguard serve: no such policy folder: {missing}\n"
    assert not (tmp_path / "data").exists()


def test_evaluate_retries_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`abguard evaluate` retries a call answered UNAVAILABLE (Evaluate is safe to resend) and prints the decision."""
    from engine.cli import main

    class Flaky(Guard):
        calls = 0

        def evaluate(self, raw: dict[str, Any]) -> dict[str, Any]:
            self.calls += 1
            if self.calls <= 2:
                raise RebuildingError
            return super().evaluate(raw)

    guard = Flaky(load_effective([str(ROOT / "policies")]), SqliteLog.in_dir(tmp_path / "data"))
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    server.start()
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(snapshot(step=0)) + "\n")
    try:
        code = main(["evaluate", "--server", f"127.0.0.1:{port}", "--input", str(source)])
    finally:
        server.stop(2).wait()
        guard.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert guard.calls == 3
    assert json.loads(captured.out)["timestamp"] == "2026-11-24T09:00:30Z"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--notify-webhook", "http://127.0.0.1:9/x"],
            {},
            "needs its signing secret in $ABGUARD_NOTIFY_WEBHOOK_SECRET",
        ),
        (["--notify-webhook", "ftp://x"], {"ABGUARD_NOTIFY_WEBHOOK_SECRET": "s"}, "'ftp://x' is not an http://"),
        (["--flags", "/no/such/flags.yaml"], {}, "/no/such/flags.yaml"),
        (["--alertmanager", "ftp://x"], {}, "ftp://x"),
    ],
)
def test_a_bad_rollback_integration_is_a_one_line_usage_error(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """A rollback integration serve cannot build stops it at start, naming what is wrong."""
    clean = {k: v for k, v in os.environ.items() if k != "ABGUARD_NOTIFY_WEBHOOK_SECRET"}
    command = [str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "data"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env={**clean, **env},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("given", "said"),
    [
        pytest.param({"file": "not hex"}, "--state-key-file {file}: the state key must be hex text", id="file-not-hex"),
        pytest.param({"file": "ab" * 8}, "--state-key-file {file}: the state key has 8 bytes", id="file-too-short"),
        pytest.param({"env": "zz"}, "ABGUARD_STATE_KEY: the state key must be hex text", id="env-not-hex"),
    ],
)
def test_a_state_key_that_cannot_seal_is_a_one_line_usage_error(
    tmp_path: Path, given: dict[str, str], said: str
) -> None:
    """A bad --state-key-file or ABGUARD_STATE_KEY stops serve before it opens anything (exit 2, one line)."""
    key = tmp_path / "key"
    args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")]
    env = {}
    if "file" in given:
        key.write_text(given["file"])
        args += ["--state-key-file", str(key)]
    else:
        env["ABGUARD_STATE_KEY"] = given["env"]
    done = abguard(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("abguard serve: " + said.format(file=key)), done.stderr
    assert done.stderr.count("\n") == 1
