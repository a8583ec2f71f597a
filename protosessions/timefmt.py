"""Time parsing and formatting for hits and sessions (integer microseconds, UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
# The last instant `format_time_us` can write (year 9999 in UTC).
MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - EPOCH) // _ONE_US


def parse_time_us(text: str) -> int | None:
    """RFC 3339 date-time with offset -> Unix microseconds; None when it lacks a
    time part or an offset, does not parse, or is before 1970 in UTC (SPEC
    `bad_timestamp`) or past year 9999 in UTC (an instant no session could
    write: it would raise OverflowError when the session closes).

    Trackers write `YYYY-MM-DDTHH:MM:SS.ffffffZ`, many hits a second: the
    second of such a text, once parsed in full, is remembered, and the next
    text of that second only has its six fraction digits read."""
    canonical = len(text) == 27 and text[26] == "Z" and text[19] == "."
    if canonical:
        base = _seconds.get(text[:19])
        frac = text[20:26]
        if base is not None and frac.isdigit() and frac.isascii():
            return base + int(frac)
    if "T" not in text and "t" not in text and " " not in text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    us = (dt - EPOCH) // _ONE_US
    if not 0 <= us <= MAX_US:
        return None
    if canonical and text[20:26].isdigit():
        if len(_seconds) >= _SECONDS_KEPT:
            _seconds.clear()
        _seconds[text[:19]] = us - us % 1_000_000
    return us


_SECONDS_KEPT = 1 << 16
_seconds: dict[str, int] = {}  # `YYYY-MM-DDTHH:MM:SS` -> its Unix microseconds (UTC)


def format_time_us(us: int) -> str:
    """Unix microseconds -> `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    sec, frac = divmod(us, 1_000_000)
    return f"{_second(sec)}.{frac:06d}Z"


@lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    return (EPOCH + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S")


def wall_now_us() -> int:
    return (datetime.now(timezone.utc) - EPOCH) // _ONE_US
