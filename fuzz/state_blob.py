"""atheris target: bytes as a stored test state (engine/state), sealed with the right key or taken as they are.

    .venv/bin/python -m fuzz.state_blob -max_total_time=60 .fuzz/corpus/state_blob   # or `make fuzz`

The first byte picks the mode: even, the rest is a state's body sealed with the fuzzer's key (what someone
who can read the database could write: the decoder's checks are what stands); odd, the rest is the blob as
Redis would hand it over (the seal must refuse it). Invariants (fuzz/invariants.check_state_blob):
StateRejectedError with a reason, or a state the engine decides its next snapshot from; nothing else.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["engine.state", "fuzz"]):
    from fuzz.invariants import check_state_blob


def test_one_input(data: bytes) -> None:
    if data:
        check_state_blob(data[1:], sealed=data[0] % 2 == 0)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
