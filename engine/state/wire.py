"""The bytes of a state: typed values written in a fixed order and read back by bounds-checked reads.

Nothing on the wire names a type, a class or a callable: the reader is told what comes next
(a float, a count, a vector of whole numbers) by the layout that calls it, and every length is
checked against a limit and against the bytes that remain before anything is allocated. A
reader that finds anything else raises StateFormatError, saying what and where.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence

from ..facts.packed import Packed, pack

MAX_ITEMS = 1 << 20  # no vector, string or mapping of a state is near this long (a day's baseline: ~3,200 numbers)
MAX_INT_BYTES = 64  # whole numbers past 512 bits are not counts of anything
_F64 = struct.Struct("<d")
RUN = struct.Struct("<dBBddd")  # one detector run: evidence, alarm, has-since, since, information, weighted
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_NATIVE_LITTLE = sys.byteorder == "little"
_U32_CODE = next(code for code in "ILH" if array(code).itemsize == 4)
_I64_CODE = next(code for code in "qlL" if array(code).itemsize == 8 and code != "L")

# kinds of whole-number vectors
_KIND_U32, _KIND_I64, _KIND_BIG = 0, 1, 2
# tags of one number in a mixed tuple
_TAG_FLOAT, _TAG_INT = 0, 1


class StateFormatError(ValueError):
    """Bytes that are not a state of the expected layout; the message says what and at which offset."""


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def bytes(self) -> bytes:
        return b"".join(self._parts)

    def f64(self, value: float) -> None:
        self._parts.append(_F64.pack(value))

    def opt_f64(self, value: float | None) -> None:
        if value is None:
            self._parts.append(b"\x00")
        else:
            self._parts.append(b"\x01" + _F64.pack(value))

    def flag(self, value: bool) -> None:
        self._parts.append(b"\x01" if value else b"\x00")

    def count(self, value: int) -> None:
        self._parts.append(_U32.pack(value))

    def whole(self, value: int) -> None:
        if -(1 << 63) <= value < (1 << 63):
            self._parts.append(b"\x00" + _I64.pack(value))
        else:
            size = (value.bit_length() + 8) // 8
            self._parts.append(b"\x01" + _U32.pack(size) + value.to_bytes(size, "little", signed=True))

    def opt_int(self, value: int | None) -> None:
        self.flag(value is not None)
        if value is not None:
            self.whole(value)

    def text(self, value: str) -> None:
        data = value.encode("utf-8", "surrogatepass")
        self._parts.append(_U32.pack(len(data)) + data)

    def opt_text(self, value: str | None) -> None:
        self.flag(value is not None)
        if value is not None:
            self.text(value)

    def floats(self, values: array[float]) -> None:
        data = values if _NATIVE_LITTLE else _swapped(values)
        self._parts.append(_U32.pack(len(values)) + data.tobytes())

    def ints(self, values: Packed | Sequence[int]) -> None:
        """Whole numbers as the narrowest of u32, i64 or one by one (any size)."""
        if isinstance(values, array) and values.typecode in (_U32_CODE, _I64_CODE):
            kind, packed = (_KIND_U32, values) if values.typecode == _U32_CODE else (_KIND_I64, values)
        else:
            found = pack(values)
            if not isinstance(found, array):
                self._parts.append(bytes((_KIND_BIG,)) + _U32.pack(len(found)))
                for value in found:
                    self.whole(value)
                return
            kind, packed = (_KIND_U32 if found.typecode == _U32_CODE else _KIND_I64), found
        data = packed if _NATIVE_LITTLE else _swapped(packed)
        self._parts.append(bytes((kind,)) + _U32.pack(len(packed)) + data.tobytes())

    def run(self, evidence: float, alarm: bool, since: float | None, information: float, weighted: float) -> None:
        self._parts.append(RUN.pack(evidence, alarm, since is not None, since or 0.0, information, weighted))

    def numbers(self, values: Sequence[int | float]) -> None:
        """A short tuple of numbers that may mix whole numbers and floats, each kept as it was
        (typed as a union: compiled by mypyc, a `float` variable would turn an int into a float)."""
        self.count(len(values))
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool):
                self._parts.append(b"\x01")
                self.whole(value)
            else:
                self._parts.append(b"\x00" + _F64.pack(value))

    def float_map(self, values: Mapping[str, float]) -> None:
        self.count(len(values))
        for key, value in values.items():
            self.text(key)
            self.f64(value)

    def text_map(self, values: Mapping[str, str]) -> None:
        self.count(len(values))
        for key, value in values.items():
            self.text(key)
            self.text(value)


class Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def done(self) -> None:
        if self._at != len(self._data):
            raise StateFormatError(f"{len(self._data) - self._at} bytes left over at offset {self._at}")

    def _take(self, size: int, what: str) -> memoryview:
        end = self._at + size
        if size < 0 or end > len(self._data):
            raise StateFormatError(
                f"{what}: {size} bytes wanted at offset {self._at}, {len(self._data) - self._at} left"
            )
        view = self._data[self._at : end]
        self._at = end
        return view

    def _length(self, what: str, limit: int = MAX_ITEMS) -> int:
        value: int = _U32.unpack(self._take(4, what))[0]
        if value > limit:
            raise StateFormatError(f"{what}: a length of {value} at offset {self._at - 4} (at most {limit})")
        return value

    def f64(self, what: str) -> float:
        value: float = _F64.unpack(self._take(8, what))[0]
        if not math.isfinite(value):
            raise StateFormatError(f"{what}: {value} is not a finite number")
        return value

    def flag(self, what: str) -> bool:
        byte = self._take(1, what)[0]
        if byte > 1:
            raise StateFormatError(f"{what}: {byte} is not a flag (0 or 1) at offset {self._at - 1}")
        return byte == 1

    def opt_f64(self, what: str) -> float | None:
        return self.f64(what) if self.flag(what) else None

    def count(self, what: str, limit: int = MAX_ITEMS) -> int:
        return self._length(what, limit)

    def whole(self, what: str) -> int:
        if not self.flag(what):
            value: int = _I64.unpack(self._take(8, what))[0]
            return value
        size = self._length(what, MAX_INT_BYTES)
        return int.from_bytes(self._take(size, what), "little", signed=True)

    def opt_int(self, what: str) -> int | None:
        return self.whole(what) if self.flag(what) else None

    def text(self, what: str, limit: int = 4096) -> str:
        size = self._length(what, limit)
        try:
            return str(self._take(size, what), "utf-8")
        except UnicodeDecodeError as error:
            raise StateFormatError(f"{what}: not UTF-8 ({error.reason})") from None

    def opt_text(self, what: str, limit: int = 4096) -> str | None:
        return self.text(what, limit) if self.flag(what) else None

    def floats(self, what: str, *, allow_nan: bool = False) -> array[float]:
        size = self._length(what)
        values = array("d")
        values.frombytes(self._take(8 * size, what))
        if not _NATIVE_LITTLE:
            values.byteswap()
        if not math.isfinite(sum(values, 0.0)):  # one inf or NaN makes the sum so (or an overflow): look closer
            for value in values:
                if not math.isfinite(value) and not (allow_nan and math.isnan(value)):
                    raise StateFormatError(f"{what}: {value} is not a finite number")
        return values

    def ints(self, what: str) -> Packed:
        kind = self._take(1, what)[0]
        if kind == _KIND_BIG:
            return pack([self.whole(what) for _ in range(self._length(what))])
        if kind not in (_KIND_U32, _KIND_I64):
            raise StateFormatError(f"{what}: vector kind {kind} is not one of u32 (0), i64 (1), any size (2)")
        size = self._length(what)
        values = array(_U32_CODE if kind == _KIND_U32 else _I64_CODE)
        values.frombytes(self._take(values.itemsize * size, what))
        if not _NATIVE_LITTLE:
            values.byteswap()
        return values

    def run(self, what: str) -> tuple[float, bool, float | None, float, float]:
        """One detector run's fields, in one read: (evidence, alarm, since or None, information, weighted)."""
        evidence, alarm, timed, since, information, weighted = RUN.unpack(self._take(RUN.size, what))
        if alarm > 1 or timed > 1:
            raise StateFormatError(f"{what}: flags {alarm}, {timed} are not 0 or 1")
        for value in (evidence, since, information, weighted):
            if not math.isfinite(value):
                raise StateFormatError(f"{what}: {value} is not a finite number")
        return evidence, alarm == 1, since if timed else None, information, weighted

    def numbers(self, what: str, limit: int = 256) -> tuple[int | float, ...]:
        out: list[int | float] = []
        for _ in range(self._length(what, limit)):
            tag = self._take(1, what)[0]
            if tag == _TAG_INT:
                out.append(self.whole(what))
            elif tag == _TAG_FLOAT:
                out.append(self.f64(what))
            else:
                raise StateFormatError(f"{what}: number tag {tag} is not float (0) or int (1)")
        return tuple(out)

    def float_map(self, what: str, keys: Iterable[str] | None = None) -> dict[str, float]:
        allowed = None if keys is None else frozenset(keys)
        out: dict[str, float] = {}
        for _ in range(self._length(what, 4096)):
            key = self.text(what, 512)
            if allowed is not None and key not in allowed:
                raise StateFormatError(f"{what}: {key[:80]!r} is not one of the policy's names")
            out[key] = self.f64(f"{what}[{key[:80]!r}]")
        return out

    def text_map(self, what: str, keys: Iterable[str]) -> dict[str, str]:
        allowed = frozenset(keys)
        out: dict[str, str] = {}
        for _ in range(self._length(what, len(allowed))):
            key = self.text(what, 512)
            if key not in allowed:
                raise StateFormatError(f"{what}: {key[:80]!r} is not one of the policy's names")
            out[key] = self.text(f"{what}[{key!r}]", 1024)
        return out


def _swapped(values: array[int] | array[float]) -> array[int] | array[float]:
    copy = values[:]
    copy.byteswap()
    return copy
