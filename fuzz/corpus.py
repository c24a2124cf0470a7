"""Seed corpora for the atheris targets, from the bundled scenarios and policies: `python -m fuzz.corpus DIR`.

Each target's folder is DIR/<target>; files already there (what earlier runs found) are kept.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from engine.api.v1 import risk_pb2 as pb
from fuzz.invariants import POLICIES, SCENARIOS, request_of, state_seeds

TARGETS = ("evaluate_proto", "evaluate_batch", "evaluate_json", "policy_yaml", "when_expr", "state_blob")


def seeds() -> dict[str, list[bytes]]:
    rows = []
    for path in sorted(SCENARIOS.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()[:4]]
    snapshots = [request_of(row).snapshot for row in rows]
    batches = [pb.EvaluateBatchRequest(snapshots=snapshots[i : i + 5]) for i in range(0, len(snapshots), 5)]
    names = sorted(str(p.relative_to(POLICIES)) for p in POLICIES.rglob("*.yaml") if "tests" not in p.parts)
    conditions = yaml.safe_load((POLICIES / "default.yaml").read_text())["spec"]["conditions"].values()
    whens = sorted({i["when"] for c in conditions for i in c.get("indicators", []) if "when" in i})
    return {
        "evaluate_proto": [request_of(row).SerializeToString() for row in rows],
        "evaluate_batch": [batch.SerializeToString() for batch in batches],
        "evaluate_json": [json.dumps(row).encode() for row in rows],
        # policy_yaml's first byte picks the file (its FILES: these names, sorted)
        "policy_yaml": [bytes([index]) + (POLICIES / name).read_bytes() for index, name in enumerate(names)],
        "when_expr": [text.encode() for text in whens],
        "state_blob": state_seeds(),
    }


def write(root: Path) -> None:
    for target, items in seeds().items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            (folder / f"seed-{hashlib.sha1(item).hexdigest()[:16]}").write_bytes(item)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else ".fuzz/corpus"))
