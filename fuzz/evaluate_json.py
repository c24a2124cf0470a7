"""atheris target: bytes as the body of POST /v1/evaluate to a real uvicorn server (engine/http).

    .venv/bin/python -m fuzz.evaluate_json -max_total_time=60 .fuzz/corpus/evaluate_json   # or `make fuzz`

Invariants: never a 500; a non-200 answer is problem+json with a domain status, and a 400 or 409 names
its fields; every 200 inputs the server still answers health and a valid snapshot (fuzz/invariants.py).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from fuzz.invariants import check_http, service

CHECK_EVERY = 200


def main() -> None:
    with service() as running:
        count = 0

        def test_one_input(data: bytes) -> None:
            nonlocal count
            check_http(*running.post("/v1/evaluate", data))
            count += 1
            if count % CHECK_EVERY == 0:
                running.alive()

        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
