"""atheris target: bytes as an Evaluate request to a real gRPC server (libFuzzer mutates the protobuf bytes).

    .venv/bin/python -m fuzz.evaluate_proto -max_total_time=60 .fuzz/corpus/evaluate_proto   # or `make fuzz`

Invariants (fuzz/invariants.py): OK or a domain code, never UNKNOWN or INTERNAL; INVALID_ARGUMENT and
FAILED_PRECONDITION name the field; every 500 inputs the server still answers health and a valid snapshot.
atheris instruments the Python layers (servicer, guard, store, conversion); the core mypyc compiled
(engine/compiled.py) runs uninstrumented: it is fuzzed, but its branches do not guide the fuzzer.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["engine", "fuzz"]):
    from fuzz.invariants import EVALUATE, Service, call_raw, check_evaluate_reply, fuzz_service

CHECK_EVERY = 500


def check(running: Service, data: bytes) -> None:
    reply = call_raw(running.channel, EVALUATE, data)
    if isinstance(reply, bytes):
        check_evaluate_reply(reply)


if __name__ == "__main__":
    fuzz_service(check, CHECK_EVERY)
