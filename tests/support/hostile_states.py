"""Stored states as a hostile writer of Redis or the database would leave them: each must be refused.

Some are what someone who can write only Redis can make (a crafted pickle, bytes cut short, a valid
blob of another test or an earlier version); the rest are sealed with the real key, as someone who can
also read the database could, so that the checks behind the seal are what refuses them."""

from __future__ import annotations

import math
import pickle
import struct
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.facts.accuracy import AccuracyWindow
from engine.pipeline import TestState
from engine.policy.model import Policy
from engine.state import StateCodec
from engine.state.layout import encode
from engine.state.seal import seal


class Exploit:
    """Unpickled, it writes its marker file with the unpickling process's pid."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write(str(__import__('os').getpid()))",))


def crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps(Exploit(marker))


def _sealed(key: bytes, purpose: str, test_id: str, version: int, policy: Policy, body: bytes, layout: int) -> bytes:
    return seal(key, purpose, test_id, version, policy.digest, layout, body)


def _with_window(state: TestState, name: str, window: Any) -> TestState:
    windows = {**state.windows.windows, name: window}
    return replace(state, windows=replace(state.windows, windows=windows))


def hostile_blobs(
    key: bytes, policy: Policy, purpose: str, test_id: str, version: int, state: TestState,
    other_test: bytes, earlier: bytes, marker: Path,
) -> dict[str, bytes]:  # fmt: skip
    """By name: blobs that must all be refused for (purpose, test_id, version). `other_test` is a valid
    blob of another test at this version, `earlier` a valid blob of this test at an earlier one."""
    assert state.last_time is not None, "a state that has seen a snapshot"
    good = StateCodec(policy, key).dump(purpose, test_id, version, state)
    body = encode(state)
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    accuracy = state.windows.windows["accuracy"]
    assert isinstance(accuracy, AccuracyWindow)
    labels = accuracy.labels
    first = labels.packed[0] if len(labels.packed) else 0
    negative = _with_window(
        state, "accuracy", replace(accuracy, labels=replace(labels, packed=array("q", [first, -5, 1, 1, 1])))
    )
    rule = policy.rules[0].name
    overcounted = _with_window(state, "accuracy", replace(accuracy, challenger_latest=(5, 9)))

    layout = StateCodec(policy, key).layout

    def sealed(body: bytes, layout: int = layout) -> bytes:
        return _sealed(key, purpose, test_id, version, policy, body, layout)

    return {
        "crafted-pickle": crafted_pickle(marker),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "bit-flipped": bytes(flipped),
        "wrong-layout": sealed(body, layout ^ 0x5A5A),
        "nan": sealed(encode(replace(state, last_interval=math.nan))),
        "huge-length": sealed(body[:17] + struct.pack("<I", 0x7FFFFFF0) + body[21:]),
        "negative-cut": sealed(encode(replace(state, cuts={f"rule:{rule}": -5.0}))),
        "negative-count": sealed(encode(negative)),
        "more-correct-than-labeled": sealed(encode(overcounted)),
        "unknown-indicator": sealed(encode(replace(state, indicator_since={"os.system": state.last_time}))),
        "trailing-bytes": sealed(body + b"\x00"),
        "another-tests-blob": other_test,
        "an-earlier-versions-blob": earlier,
    }


def ran(marker: Path) -> bool:
    """Whether the crafted pickle's code ran (in this process or any other)."""
    return marker.exists()
