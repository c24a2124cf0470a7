"""atheris target: bytes as an EvaluateBatch request to a real gRPC server.

    .venv/bin/python -m fuzz.evaluate_batch -max_total_time=60 .fuzz/corpus/evaluate_batch   # or `make fuzz`

Invariants: the call ends OK or with a domain code; each result is a decision or its own domain error
whose violations name `snapshots[i]`; every 500 inputs the server still answers (fuzz/invariants.py).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from fuzz.invariants import EVALUATE_BATCH, call_raw, check_batch_reply, service

CHECK_EVERY = 500


def main() -> None:
    with service() as running:
        count = 0

        def test_one_input(data: bytes) -> None:
            nonlocal count
            reply = call_raw(running.channel, EVALUATE_BATCH, data)
            if isinstance(reply, bytes):
                check_batch_reply(reply, None)
            count += 1
            if count % CHECK_EVERY == 0:
                running.alive()

        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
