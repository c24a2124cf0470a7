"""What tells a rewritten file apart, for everything security reloads from disk (auth file, JWKS, certificates)."""

from __future__ import annotations

import os
from pathlib import Path

Stamp = tuple[int, int, int, int]  # inode, size, mtime and ctime in ns


def stamp(path: str | Path | None) -> Stamp | None:
    """Changes when a file is written in place or renamed into place; None for no file (or none readable)."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
