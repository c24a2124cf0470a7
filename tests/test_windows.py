"""Bounded event-time windows: RollingSums against a brute-force sum over the last `buckets`
time buckets, exact whole-number sums whatever their size, immutability, bounded memory."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.facts.windows import RollingSums

WIDTH = 3


def _tuple(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _empty(window: float, buckets: int, width: int = WIDTH) -> RollingSums:
    return RollingSums.empty(_tuple, width, window, buckets)


def _brute_total(bucket: float, buckets: int, added: list[tuple[float, tuple[int, ...]]], t: float) -> list[int]:
    """Sum of the rows whose bucket floor(t_i / bucket) is > floor(t / bucket) - buckets."""
    current = math.floor(t / bucket)
    total = [0] * WIDTH
    for when, values in added:
        if math.floor(when / bucket) > current - buckets:
            total = [a + b for a, b in zip(total, values, strict=True)]
    return total


def _gaps(window: float) -> st.SearchStrategy[float]:
    """Mostly small steps (several per bucket), sometimes repeats, occasionally gaps longer than the window."""
    return st.one_of(st.floats(0.0, window / 4), st.just(0.0), st.floats(window / 2, 3 * window))


# counts from tiny to the contract's largest, so rounding would show if sums were floats
COUNTS = st.one_of(st.integers(0, 20), st.integers(0, 10**12))


@settings(max_examples=150, deadline=None, database=None)
@given(st.data())
def test_rolling_sums_match_brute_force_exactly(data: st.DataObject) -> None:
    """After every add, sums(t) equals the brute-force integer sum over the window, digit for digit."""
    window = data.draw(st.sampled_from([60.0, 300.0, 7.5, 1.0]), label="window")
    buckets = data.draw(st.sampled_from([1, 3, 30]), label="buckets")
    rolling = _empty(window, buckets)
    t = data.draw(st.floats(0.0, 2e9), label="start")
    steps = data.draw(
        st.lists(st.tuples(_gaps(window), st.tuples(COUNTS, COUNTS, COUNTS)), min_size=1, max_size=60),
        label="steps",
    )
    added: list[tuple[float, tuple[int, ...]]] = []
    for gap, values in steps:
        t += gap
        rolling = rolling.add(t, values)
        added.append((t, values))
        assert list(rolling.sums(t)) == _brute_total(rolling.bucket, buckets, added, t)
    later = t + data.draw(_gaps(window), label="final gap")
    assert list(rolling.sums(later)) == _brute_total(rolling.bucket, buckets, added, later)


@pytest.mark.parametrize(
    ("window", "buckets", "times", "expected"),
    [
        # bucket = 10 s; at t = 305 (bucket 30) the window holds buckets 1..30
        pytest.param(300.0, 30, [0.0, 9.9, 10.0, 305.0], 2, id="bucket-0-leaves-at-300s"),
        pytest.param(300.0, 30, [0.0, 10.0, 299.9], 3, id="all-within-window"),
        pytest.param(60.0, 1, [0.0, 59.0, 60.0], 1, id="single-bucket-tumbles"),
        pytest.param(60.0, 3, [0.0, 20.0, 40.0, 60.0], 3, id="three-buckets"),
    ],
)
def test_rolling_sums_bucket_boundaries(window: float, buckets: int, times: list[float], expected: int) -> None:
    """A row leaves the window when its bucket is `buckets` or more buckets behind the current one."""
    rolling = _empty(window, buckets, width=1)
    for t in times:
        rolling = rolling.add(t, (1,))
    assert rolling.sums(times[-1]) == (expected,)


def test_add_leaves_the_window_it_was_called_on_unchanged() -> None:
    """add returns a new window: the old one still reads what it read before (the step relies on it)."""
    before = _empty(300.0, 30).add(0.0, (1, 2, 3))
    after = before.add(10.0, (10, 20, 30))
    assert before.sums(10.0) == (1, 2, 3)
    assert after.sums(10.0) == (11, 22, 33)


def test_an_extreme_row_leaves_no_residue() -> None:
    """A huge row next to small ones: once it leaves the window, the small ones sum exactly as before."""
    rolling = _empty(300.0, 30).add(0.0, (10**12, 10**12, 1))
    for step in range(1, 60):
        rolling = rolling.add(step * 30.0, (step % 3, 1, 7))
    assert rolling.sums(59 * 30.0) == (sum(s % 3 for s in range(50, 60)), 10, 70)


def test_rolling_sums_memory_is_bounded() -> None:
    """nbytes, and the state actually kept, do not grow however many rows are added over however long."""
    rolling = _empty(300.0, 30, width=4)
    for step in range(2_000):
        rolling = rolling.add(step * 0.7, (1, 2, 3, 4))
    kept = len(pickle.dumps(rolling.live))
    for step in range(2_000, 40_000):
        rolling = rolling.add(step * 0.7, (1, 2, 3, 4))
    assert len(rolling.live) <= 30
    assert rolling.nbytes <= 8 * (4 * (30 + 1) + 30)
    assert len(pickle.dumps(rolling.live)) <= kept * 1.2  # the count of live buckets varies by one


def test_rolling_sums_empty_after_gap_is_exactly_zero() -> None:
    """After a gap longer than the window the sums are exactly zero."""
    rolling = _empty(300.0, 30, width=2)
    t = 1_795_000_000.0
    for step in range(500):
        rolling = rolling.add(t + step * 3.1, (step % 7, 3))
    later = t + 500 * 3.1 + 10_000
    assert rolling.sums(later) == (0, 0)
    assert rolling.add(later, (3, 7)).sums(later) == (3, 7)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((3, 2**32 - 1, 0), id="unsigned-32-bit"),
        pytest.param((2**32, 2**62, 7), id="signed-64-bit"),
        pytest.param((2**63, 10**21, 1), id="past-64-bit"),
        pytest.param((-(2**63) - 1, 5, 0), id="below-64-bit"),
    ],
)
def test_packed_buckets_stay_exact_past_every_array_type(values: tuple[int, int, int]) -> None:
    """Buckets are packed in the narrowest array that holds them and fall back to Python ints past
    64 bits: sums, eviction and a pickle round trip stay exact either way."""
    rolling = _empty(60.0, 3)
    for t in (0.0, 1.0, 25.0, 50.0):
        rolling = rolling.add(t, values)
    assert list(rolling.sums(50.0)) == [4 * v for v in values]
    assert list(rolling.sums(75.0)) == [2 * v for v in values]  # the first bucket (two rows) has left
    again = pickle.loads(pickle.dumps(rolling))
    assert again == rolling and list(again.sums(50.0)) == [4 * v for v in values]
    assert list(again.add(80.0, (1, 1, 1)).sums(80.0)) == [v + 1 for v in values]  # only 50 s is left
