"""Time parsing and formatting for hits and sessions (integer microseconds, UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def parse_time_us(text: str) -> int | None:
    """RFC 3339 date-time with offset -> Unix microseconds; None when it lacks a
    time part or an offset, or does not parse."""
    if "T" not in text and "t" not in text and " " not in text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - EPOCH) // _ONE_US


def format_time_us(us: int) -> str:
    """Unix microseconds -> `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wall_now_us() -> int:
    return (datetime.now(timezone.utc) - EPOCH) // _ONE_US
