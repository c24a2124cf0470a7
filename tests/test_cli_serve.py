"""The serve/evaluate command line and the service's event log, as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
