"""Reading policy YAML into plain data while remembering the line of every JSON path."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from .diagnostics import Diagnostic, Path, format_path

KINDS = ("RiskPolicy", "Profile", "Environment")
# A policy nests about 8 levels and holds about 500 values (policies/default.yaml); these bounds are far
# above that and keep every later stage (schema, merge, digest, all recursive) fast and inside the stack.
MAX_DEPTH = 64  # nesting levels of mappings and sequences
MAX_NODES = 50_000  # values once aliases are expanded: a "billion laughs" document is refused, not walked
_TOO_LARGE = ("yaml-alias-cycle", "yaml-too-deep", "yaml-too-large")


@dataclass
class Document:
    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        metadata = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else None

    def line_of(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line:
                return line
        return 1

    def diagnostic(self, path: Path, code: str, message: str) -> Diagnostic:
        return Diagnostic(self.file, self.line_of(path), format_path(path), code, message)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps the node tree so lines can be mapped to paths."""


def parse_text(text: str, file: str) -> tuple[Document | None, list[Diagnostic]]:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:  # PyYAML's composer recurses once per level, so a few hundred levels end it
        return None, [Diagnostic(file, 1, "$", "yaml-too-deep", f"nested more than {MAX_DEPTH} levels deep")]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        problem = error.problem or error.context or "invalid YAML"
        return None, [Diagnostic(file, line, "$", "yaml-syntax", f"YAML syntax error: {problem}")]
    except yaml.YAMLError as error:
        return None, [Diagnostic(file, 1, "$", "yaml-syntax", f"YAML error: {error}")]
    if node is None:
        return None, [Diagnostic(file, 1, "$", "yaml-empty", "the file holds no YAML document")]
    lines: dict[Path, int] = {}
    problems: list[Diagnostic] = []
    _index(node, (), lines, problems, file, set(), [MAX_NODES])
    if any(problem.code in _TOO_LARGE for problem in problems):
        return None, problems
    loader = _Loader("")
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as error:
        return None, [Diagnostic(file, 1, "$", "yaml-syntax", f"YAML error: {error}")]
    finally:
        loader.dispose()
    return Document(file, data, lines), problems


def _index(
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    problems: list[Diagnostic],
    file: str,
    open_nodes: set[int],
    budget: list[int],
) -> None:
    """Each path's line, walking aliases as the loaded data will hold them; `budget` is the values left."""
    if budget[0] <= 0:
        return
    budget[0] -= 1
    lines.setdefault(path, node.start_mark.line + 1)
    if budget[0] == 0:
        message = f"more than {MAX_NODES} values once its aliases are expanded"
        problems.append(Diagnostic(file, node.start_mark.line + 1, format_path(path), "yaml-too-large", message))
        return
    if len(path) > MAX_DEPTH:
        message = f"nested more than {MAX_DEPTH} levels deep"
        problems.append(Diagnostic(file, node.start_mark.line + 1, format_path(path), "yaml-too-deep", message))
        budget[0] = 0  # one finding is enough: the document is refused
        return
    if id(node) in open_nodes:  # an alias to one of its own ancestors: the document never ends
        problems.append(
            Diagnostic(
                file,
                node.start_mark.line + 1,
                format_path(path),
                "yaml-alias-cycle",
                "this alias refers to a node that contains it",
            )
        )
        return
    open_nodes = open_nodes | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                problems.append(
                    Diagnostic(
                        file,
                        key_node.start_mark.line + 1,
                        format_path(child),
                        "yaml-duplicate-key",
                        f"key '{key}' appears twice: the second would silently win",
                    )
                )
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, lines, problems, file, open_nodes, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*path, index), lines, problems, file, open_nodes, budget)


def read_file(path: str) -> tuple[Document | None, list[Diagnostic]]:
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, [Diagnostic(path, 0, "$", "file-unreadable", f"cannot read: {error}")]
    return parse_text(text, path)


def read_revision(spec: str) -> tuple[Document | None, list[Diagnostic]]:
    """`REV:path` reads the file as committed at REV (git show); anything else is a plain path."""
    if ":" in spec and not FsPath(spec).exists():
        revision, _, path = spec.partition(":")
        result = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git show failed"
            return None, [Diagnostic(spec, 0, "$", "file-unreadable", f"cannot read {spec}: {reason}")]
        return parse_text(result.stdout, spec)
    return read_file(spec)


def discover(paths: list[str]) -> list[str]:
    """YAML files named on the command line, or found under the directories named."""
    files: list[str] = []
    for name in paths:
        path = FsPath(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.y*ml") if "tests" not in p.relative_to(path).parts)
            files.extend(str(p) for p in found)
        else:
            files.append(name)
    return files
