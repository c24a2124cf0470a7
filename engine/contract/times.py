"""Event time on the wire: strict RFC 3339 in, one canonical UTC form out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from .errors import InputError, excerpt

MIN_TIME, MAX_TIME = 0.0, 253370764800.0  # 1970-01-01 and 9999-01-01: every time format_time can write
MAX_TEXT = 64
EXAMPLE = "2026-11-24T10:00:00Z"

# RFC 3339 section 5.6 date-time: full-date "T" full-time, with a Z or a numeric offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_time(value: object, field: str = "timestamp") -> float:
    """Seconds since the epoch of an RFC 3339 date-time; InputError naming `field` otherwise."""
    if not isinstance(value, str) or not value:
        raise InputError(field, f"required: an RFC 3339 time such as {EXAMPLE}")
    if len(value) > MAX_TEXT:
        raise InputError(field, f"{excerpt(value)} is not an RFC 3339 time (longer than {MAX_TEXT} characters)")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise InputError(field, f"{excerpt(value)} is not an RFC 3339 time (e.g. {EXAMPLE})")
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    if int(off_h or 0) > 23 or int(off_m or 0) > 59:
        raise InputError(field, f"{excerpt(value)} has an offset out of range")
    offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0)) * (-1 if sign == "-" else 1)
    try:
        micro = int(fraction[:6].ljust(6, "0")) if fraction else 0  # finer digits are dropped, as Python does
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=timezone(offset)
        )
    except ValueError as error:
        raise InputError(field, f"{excerpt(value)} is not a valid date and time: {error}") from None
    seconds = moment.timestamp()
    if not MIN_TIME <= seconds <= MAX_TIME:
        raise InputError(field, f"{excerpt(value)} is outside the years 1970 to 9998")
    return seconds


def format_time(timestamp: float) -> str:
    """The canonical form: UTC, a Z, microseconds only when there are any."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
