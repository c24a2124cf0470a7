"""atheris target: text as a `when` expression (engine/policy/expr.py, interpreted, so fully instrumented).

    .venv/bin/python -m fuzz.when_expr -max_total_time=60 .fuzz/corpus/when_expr   # or `make fuzz`

Invariants: ExprError with one of the parser's codes, or an expression whose normal form parses back to
itself (the digest depends on it); nothing else (fuzz/invariants.py).
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from engine.policy.catalog import FACTS
    from fuzz.invariants import check_expr

THRESHOLDS = {"accuracy_threshold": 0.85, "baseline_ratio": 0.95, "tiny": 5e-324, "huge": 1e308, "zero": 0.0}


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")  # the seeds are the shipped policy's `when` texts, as UTF-8
    check_expr(text, FACTS, THRESHOLDS)


def main() -> None:
    warnings.simplefilter("ignore", SyntaxWarning)  # ast.parse warns on `1and`: not a finding
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
