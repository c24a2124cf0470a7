"""Located, coded findings: what validation reports instead of raising at the first problem."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """`spec.conditions.accuracy.indicators[2].when`: the JSON path a person reads."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    path: str
    code: str
    message: str

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message} [{self.code}]"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def unique_sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(set(diagnostics))
