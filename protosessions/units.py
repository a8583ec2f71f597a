"""Parsing of the durations (`500ms`, `30m`) and sizes (`64KiB`) the CLI takes."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)\s*$")
_DURATION_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000,
                "h": 3_600_000_000, "d": 86_400_000_000}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2,
               "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3}


def parse_duration_us(text: str) -> int:
    """`30m` -> microseconds. ValueError with the accepted forms on bad input."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"bad duration {text!r}: write e.g. 500ms, 5s, 30m, 24h")
    return int(round(float(m.group(1)) * _DURATION_US[m.group(2)]))


def parse_size(text: str) -> int:
    """`64KiB` -> bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"bad size {text!r}: write e.g. 65536, 64KiB, 1MiB")
    return int(m.group(1)) * _SIZE_BYTES[m.group(2)]


def format_duration_us(us: int) -> str:
    """Inverse of `parse_duration_us` for whole units (for messages and env)."""
    for unit in ("d", "h", "m", "s", "ms"):
        size = _DURATION_US[unit]
        if us and us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"
