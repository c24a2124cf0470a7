"""The service's event log: one JSON object per line on stdout, whole lines even from many threads.

print() writes the text and the newline separately, so two threads logging at once could
put two objects on one line. Here each line is one write of the bytes and their newline,
under a lock, then a flush. A closed or full stdout loses the line, never a decision.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any

import orjson

_LOCK = threading.Lock()


def log_event(event: dict[str, Any]) -> None:
    """Write `event` as one JSON line on stdout (whole, flushed); drop it if stdout cannot take it."""
    line = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"
    with _LOCK:
        try:
            out = sys.stdout.buffer
            out.write(line)
            out.flush()
        except AttributeError:  # stdout replaced by a text-only stream (or None)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stdout.write(line.decode())
                sys.stdout.flush()
        except (OSError, ValueError):  # closed, full or gone: the service keeps deciding
            pass
