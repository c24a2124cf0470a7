"""atheris target: bytes as an EvaluateBatch request to a real gRPC server.

    .venv/bin/python -m fuzz.evaluate_batch -max_total_time=60 .fuzz/corpus/evaluate_batch   # or `make fuzz`

Invariants: the call ends OK or with a domain code; each result is a decision or its own domain error
whose violations name `snapshots[i]`; every 500 inputs the server still answers (fuzz/invariants.py).
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from fuzz.invariants import EVALUATE_BATCH, Service, call_raw, check_batch_reply, fuzz_service

CHECK_EVERY = 500


def check(running: Service, data: bytes) -> None:
    reply = call_raw(running.channel, EVALUATE_BATCH, data)
    if isinstance(reply, bytes):
        check_batch_reply(reply, None)


if __name__ == "__main__":
    fuzz_service(check, CHECK_EVERY)
