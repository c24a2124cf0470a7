"""Bounded event-time windows: RollingSums against a brute-force sum over the last `buckets`
time buckets, constant memory, exact zero after a gap."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.windows import RollingSums

WIDTH = 3


def _brute_total(rolling: RollingSums, buckets: int, added: list[tuple[float, list[int]]], t: float) -> np.ndarray:
    """Sum of the values whose bucket floor(t_i / bucket) is > floor(t / bucket) - buckets."""
    current = math.floor(t / rolling.bucket)
    total = np.zeros(rolling.width)
    for when, values in added:
        if math.floor(when / rolling.bucket) > current - buckets:
            total += values
    return total


def _gaps(window: float) -> st.SearchStrategy[float]:
    """Mostly small steps (several per bucket), sometimes repeats, occasionally gaps longer than the window."""
    return st.one_of(
        st.floats(0.0, window / 4),
        st.just(0.0),
        st.floats(window / 2, 3 * window),
    )


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_rolling_sums_match_brute_force(data: st.DataObject) -> None:
    """After every add, total(t) equals the brute-force sum over the window of `buckets` buckets ending at t's."""
    window = data.draw(st.sampled_from([60.0, 300.0, 7.5, 1.0]), label="window")
    buckets = data.draw(st.sampled_from([1, 3, 30]), label="buckets")
    rolling = RollingSums(window, WIDTH, buckets)
    t = data.draw(st.floats(0.0, 2e9), label="start")
    steps = data.draw(
        st.lists(
            st.tuples(_gaps(window), st.lists(st.integers(0, 20), min_size=WIDTH, max_size=WIDTH)),
            min_size=1,
            max_size=60,
        ),
        label="steps",
    )
    added: list[tuple[float, list[int]]] = []
    for gap, values in steps:
        t += gap
        rolling.add(t, values)
        added.append((t, values))
        assert np.array_equal(rolling.total(t), _brute_total(rolling, buckets, added, t))
    later = t + data.draw(_gaps(window), label="final gap")
    assert np.array_equal(rolling.total(later), _brute_total(rolling, buckets, added, later))


@pytest.mark.parametrize(
    ("window", "buckets", "times", "expected"),
    [
        # bucket = 10 s; at t = 305 (bucket 30) the window holds buckets 1..30
        pytest.param(300.0, 30, [0.0, 9.9, 10.0, 305.0], 2.0, id="bucket-0-leaves-at-300s"),
        pytest.param(300.0, 30, [0.0, 10.0, 299.9], 3.0, id="all-within-window"),
        pytest.param(60.0, 1, [0.0, 59.0, 60.0], 1.0, id="single-bucket-tumbles"),
        pytest.param(60.0, 3, [0.0, 20.0, 40.0, 60.0], 3.0, id="three-buckets"),
    ],
)
def test_rolling_sums_bucket_boundaries(window: float, buckets: int, times: list[float], expected: float) -> None:
    """A value leaves the window when its bucket is `buckets` or more buckets behind the current one."""
    rolling = RollingSums(window, 1, buckets)
    for t in times:
        rolling.add(t, [1.0])
    assert rolling.total(times[-1])[0] == expected


def test_rolling_sums_memory_is_constant() -> None:
    """nbytes, and the state actually kept, do not grow however many values are added over however long."""
    rolling = RollingSums(300.0, 4, 30)
    before = rolling.nbytes
    for step in range(2_000):
        rolling.add(step * 0.7, [1.0, 2.0, 3.0, 4.0])
    kept = len(pickle.dumps(rolling))
    for step in range(2_000, 40_000):
        rolling.add(step * 0.7, [1.0, 2.0, 3.0, 4.0])
    assert rolling.nbytes == before
    assert len(pickle.dumps(rolling)) <= kept * 1.05


def test_rolling_sums_empty_after_gap_is_exactly_zero() -> None:
    """After a gap longer than the window the total is exactly zero, with no rounding residue."""
    rolling = RollingSums(300.0, 2, 30)
    t = 1_795_000_000.0
    for step in range(500):
        rolling.add(t + step * 3.1, [0.1 * (step % 7), 1e-3 / 3])
    later = t + 500 * 3.1 + 10_000
    total = rolling.total(later)
    assert total.tolist() == [0.0, 0.0]
    rolling.add(later, [0.3, 0.7])
    assert rolling.total(later).tolist() == [0.3, 0.7]


def test_rolling_sums_before_the_epoch() -> None:
    """Times before 1970 (negative, accepted by parse_snapshot) leave the window like any other."""
    rolling = RollingSums(300.0, 1, 30)
    rolling.add(-60.0, [1.0])
    rolling.add(5.0, [2.0])
    rolling.add(250.0, [4.0])
    assert rolling.total(250.0).tolist() == [6.0]
