"""Base policy + profile + environment = the effective policy, remembering who set what."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .diagnostics import Diagnostic, Path
from .documents import Document

# Lists whose items an overlay addresses by `name`; any other list is replaced whole.
NAMED_LISTS = frozenset({"indicators", "rules", "levels"})


@dataclass
class Merged:
    """The merged data and, for each path an overlay set, the document and its own path there."""

    data: Any
    base: Document
    origin: dict[Path, tuple[Document, Path]] = field(default_factory=dict)
    missed: dict[Diagnostic, Path] = field(default_factory=dict)  # an overlay's key the base lacks: where it aimed
    reshaped: set[Path] = field(default_factory=set)  # a mapping or list replaced by something else, or vice versa

    def locate(self, path: Path) -> tuple[Document, Path]:
        for end in range(len(path), -1, -1):
            found = self.origin.get(tuple(path[:end]))
            if found:
                document, own = found
                return document, own + tuple(path[end:])
        return self.base, path

    def diagnostic(self, path: Path, code: str, message: str) -> Diagnostic:
        document, own = self.locate(path)
        return document.diagnostic(own, code, message)


def merge(base: Document, overlays: list[Document]) -> tuple[Merged, list[Diagnostic]]:
    merged = Merged(copy.deepcopy(base.data), base)
    problems: list[Diagnostic] = []
    for overlay in overlays:
        spec = overlay.data.get("spec") if isinstance(overlay.data, dict) else None
        if isinstance(spec, dict) and isinstance(merged.data.get("spec"), dict):
            _merge_into(merged.data["spec"], spec, ("spec",), ("spec",), overlay, merged, problems)
    return merged, problems


def _merge_into(
    target: dict[str, Any],
    source: dict[str, Any],
    path: Path,
    own: Path,
    overlay: Document,
    merged: Merged,
    problems: list[Diagnostic],
) -> None:
    for key, value in source.items():
        child, child_own = (*path, key), (*own, key)
        if key not in target:
            problem = overlay.diagnostic(
                child_own, "overlay-unknown-key", f"'{key}' overrides nothing in the base policy"
            )
            merged.missed[problem] = child
            problems.append(problem)
            continue
        current = target[key]
        if isinstance(current, dict) and isinstance(value, dict):
            _merge_into(current, value, child, child_own, overlay, merged, problems)
        elif key in NAMED_LISTS and _named_list(current) and isinstance(value, list):
            _merge_named(current, value, child, child_own, overlay, merged, problems)
        else:
            if _shape(current) != _shape(value):  # a schema error in one of the documents; the other's part is lost
                merged.reshaped.add(child)
            target[key] = copy.deepcopy(value)
            merged.origin[child] = (overlay, child_own)


def _shape(value: Any) -> type | None:
    return dict if isinstance(value, dict) else list if isinstance(value, list) else None


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _merge_named(
    target: list[dict[str, Any]],
    source: list[Any],
    path: Path,
    own: Path,
    overlay: Document,
    merged: Merged,
    problems: list[Diagnostic],
) -> None:
    """Items of a named list (indicators, actions, rules) are addressed by their `name`."""
    positions = {item["name"]: index for index, item in enumerate(target)}
    for own_index, item in enumerate(source):
        item_own = (*own, own_index)
        name = item.get("name") if isinstance(item, dict) else None
        if name not in positions:
            problem = overlay.diagnostic(item_own, "overlay-unknown-key", f"no item named {name!r} in the base policy")
            merged.missed[problem] = path
            problems.append(problem)
            continue
        index = positions[name]
        rest = {k: v for k, v in item.items() if k != "name"}
        _merge_into(target[index], rest, (*path, index), item_own, overlay, merged, problems)
