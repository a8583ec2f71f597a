"""Stopping on request (placeholder until the signal handling lands)."""

from __future__ import annotations

_requested = False


def requested() -> bool:
    return _requested


def reset() -> None:
    global _requested
    _requested = False
