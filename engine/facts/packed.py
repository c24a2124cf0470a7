"""Whole numbers and floats packed into arrays: what a long-lived test state holds most of.

A window of 288 buckets of 10 counts held as tuples of Python ints costs ~150 KiB per test (an int
object and a pointer per number); packed, the same numbers take 4 or 8 bytes each. `pack` picks
the narrowest array type that holds every value exactly and falls back to a tuple of Python ints
when one does not fit in 64 bits, so sums stay exact whatever the numbers. Packed values are
treated as immutable: every change builds a new one.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import TypeAlias

Packed: TypeAlias = "array[int] | tuple[int, ...]"  # whole numbers, oldest first
_U32 = next(code for code in "ILH" if array(code).itemsize == 4)
_I64 = next(code for code in "qlL" if array(code).itemsize == 8 and code != "L")
_U32_MAX, _I64_MIN, _I64_MAX = 2**32 - 1, -(2**63), 2**63 - 1
EMPTY: Packed = ()  # no numbers: an immutable default


def pack(values: Iterable[int]) -> Packed:
    """The values in the narrowest exact form: unsigned 32-bit, signed 64-bit, or a tuple of ints."""
    numbers = values if isinstance(values, list | tuple | array) else list(values)
    if not numbers:
        return EMPTY
    low, high = min(numbers), max(numbers)
    if low >= 0 and high <= _U32_MAX:
        return array(_U32, numbers)
    if low >= _I64_MIN and high <= _I64_MAX:
        return array(_I64, numbers)
    return tuple(numbers)


def concat(first: Packed, second: Packed) -> Packed:
    """first followed by second, in the narrowest form that holds both."""
    if isinstance(first, array) and isinstance(second, array) and first.typecode == second.typecode:
        return first + second
    if not first:
        return second
    if not second:
        return first
    return pack([*first, *second])


def floats(values: Iterable[float]) -> array[float]:
    return array("d", values)


def plain(values: Sequence[int] | array[float]) -> tuple[float, ...]:
    """For pickling: a tuple pickles small numbers in 2 to 5 bytes where an array takes 8."""
    return tuple(values)
