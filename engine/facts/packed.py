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
_CODES = (_U32, _I64)  # narrowest first; past them, a tuple of Python ints
EMPTY: Packed = ()  # no numbers: an immutable default


def pack(values: Iterable[int]) -> Packed:
    """The values in the narrowest exact form: unsigned 32-bit, signed 64-bit, or a tuple of ints."""
    numbers = values if isinstance(values, list | tuple) else list(values)
    if not numbers:
        return EMPTY
    for code in _CODES:
        try:
            return array(code, numbers)
        except OverflowError:  # a value below zero or past the type: try the next one
            continue
    return tuple(numbers)


def concat(first: Packed, second: Iterable[int]) -> Packed:
    """first followed by second, in the narrowest form that holds both (first's, when second fits it)."""
    if type(first) is array:
        if type(second) is array and second.typecode == first.typecode:
            return first + second
        numbers = second if isinstance(second, list | tuple) else list(second)
        try:
            return first + array(first.typecode, numbers)
        except OverflowError:
            return pack([*first, *numbers])
    if not first:
        return second if type(second) is array else pack(second)
    return pack([*first, *second])


def floats(values: Iterable[float]) -> array[float]:
    return array("d", values)


def plain(values: Sequence[int] | array[float]) -> tuple[float, ...]:
    """For pickling: a tuple pickles small numbers in 2 to 5 bytes where an array takes 8."""
    return tuple(values)
