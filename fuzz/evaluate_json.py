"""atheris target: bytes as the body of POST /v1/evaluate to a real uvicorn server (engine/http).

    .venv/bin/python -m fuzz.evaluate_json -max_total_time=60 .fuzz/corpus/evaluate_json   # or `make fuzz`

Invariants: never a 500; a non-200 answer is problem+json with a domain status, and a 400 or 409 names
its fields; every 200 inputs the server still answers health and a valid snapshot (fuzz/invariants.py).
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from fuzz.invariants import Service, check_http, fuzz_service

CHECK_EVERY = 200


def check(running: Service, data: bytes) -> None:
    check_http(*running.post("/v1/evaluate", data))


if __name__ == "__main__":
    fuzz_service(check, CHECK_EVERY)
