"""One middleware per module; `default_chain` is the order the engine runs them in."""

from __future__ import annotations

from ..config import Settings
from ..middleware import Middleware
from .close_trigger import CloseTrigger
from .compaction import Compaction
from .dedup import Dedup

__all__ = ["CloseTrigger", "Compaction", "Dedup", "default_chain"]


def default_chain(settings: Settings) -> list[Middleware]:
    """Close first (a hit for an expired proto-session starts a new one, so it
    is never a duplicate of the closed one), then de-duplicate, then compact."""
    return [CloseTrigger(settings), Dedup(), Compaction(settings)]
