"""flagd: abguard owns a flag definitions file that flagd, or an OpenFeature provider in file mode, watches.

Each test's flag has the variants `champion` and `challenger` (string values of the same names).
While a test runs, the targeting is flagd's `fractional` operation without a bucketing expression,
so flagd buckets on the flag key and the targeting key together: a user's arm is sticky, and two
tests do not split the same users alike. A rollback removes the targeting, so `defaultVariant`
(`champion`) answers for everyone. The file is replaced atomically and only the flags abguard
writes change; the others, and any field of ours someone added (`metadata`), stay as they were.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .base import FlagError, check_percent

SCHEMA = "https://flagd.dev/schema/v0/flags.json"
CHAMPION = "champion"
CHALLENGER = "challenger"
FINE_TOTAL = 100_000  # weights out of this for a share that is not a whole percent: 0.001% steps

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file, shared by every provider on it in this process."""
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def weights(percent: float) -> tuple[int, int]:
    """Challenger and champion weights: P and 100-P for a whole percent, which every flagd reads (older
    ones want percentages summing to 100); thousandths of a percent otherwise (relative weights)."""
    share = check_percent(percent)
    if share.is_integer():
        return int(share), 100 - int(share)
    challenger = round(share * FINE_TOTAL / 100)
    return challenger, FINE_TOTAL - challenger


def flag_definition(percent: float | None, current: object = None) -> dict[str, Any]:
    """The flag with the challenger at `percent` (None: rolled back), keeping `current`'s other fields."""
    definition: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    variants = definition.get("variants")
    definition["state"] = "ENABLED"
    definition["variants"] = {
        **(variants if isinstance(variants, dict) else {}),
        CHAMPION: CHAMPION,
        CHALLENGER: CHALLENGER,
    }
    definition["defaultVariant"] = CHAMPION
    if percent is None:
        definition.pop("targeting", None)
    else:
        challenger, champion = weights(percent)
        definition["targeting"] = {"fractional": [[CHALLENGER, challenger], [CHAMPION, champion]]}
    return definition


class FlagdFileProvider:
    """Writes each test's flag into one flagd JSON file."""

    name = "flagd"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self._lock = _lock_for(self.path)

    def set_rollout(self, flag: str, percent: float) -> None:
        """The flag splits its users `percent` challenger, the rest champion."""
        check_percent(percent)
        self._update(flag, percent)

    def roll_back(self, flag: str) -> None:
        """The flag answers champion for everyone."""
        self._update(flag, None)

    def _update(self, flag: str, percent: float | None) -> None:
        with self._lock:
            document = self._read()
            flags = document.setdefault("flags", {})
            if not isinstance(flags, dict):
                raise FlagError(f"flagd: {self.path}: 'flags' is not an object; abguard will not overwrite it")
            updated = flag_definition(percent, flags.get(flag))
            if flags.get(flag) == updated and "$schema" in document:
                return  # nothing changes: no write, so no reload in the watchers
            flags[flag] = updated
            document.setdefault("$schema", SCHEMA)
            self._write(document)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"$schema": SCHEMA, "flags": {}}
        except OSError as error:
            raise FlagError(f"flagd: cannot read {self.path}: {error.strerror or error}") from error
        try:
            document = json.loads(text) if text.strip() else {}
        except ValueError as error:
            raise FlagError(f"flagd: {self.path} is not JSON ({error}); abguard will not overwrite it") from error
        if not isinstance(document, dict):
            raise FlagError(f"flagd: {self.path} is not a JSON object; abguard will not overwrite it")
        return document

    def _write(self, document: dict[str, Any]) -> None:
        """Write beside the file and rename over it, so a reader sees the old file or the new one, never half."""
        folder = self.path.parent
        temporary: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, self.path)
            temporary = None
        except OSError as error:
            raise FlagError(f"flagd: cannot write {self.path}: {error.strerror or error}") from error
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
