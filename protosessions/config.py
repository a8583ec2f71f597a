"""Settings: every SPEC parameter, in the units the engine uses (microseconds, bytes)."""

from __future__ import annotations

from dataclasses import dataclass

from .units import parse_duration_us, parse_size

EVICTION_STRATEGIES = ("rewrite", "evict")
SESSION_HITS = ("full", "ids", "none")  # what a session record's `hits` holds
INPUT_FORMATS = ("spec", "d8a")  # SPEC "Input: one hit" / "The d8a form"
IDENTITY_RULES = ("classic", "d8a")  # SPEC rule 1 / its "Identity rules `d8a`"


@dataclass(frozen=True)
class Settings:
    """Engine parameters. Durations are integer microseconds so the hot path never
    touches floats or `timedelta`."""

    session_duration_us: int = 30 * 60 * 1_000_000
    tick_interval_us: int = 1_000_000
    max_events: int = 10_000
    max_duration_us: int = 24 * 3600 * 1_000_000
    allowed_lateness_us: int = 0
    join_by_session_stamp: bool = True
    join_by_user_id: bool = True
    eviction_strategy: str = "rewrite"
    compaction_threshold: int = 64 * 1024
    max_hit_bytes: int = 65536
    max_future_skew_us: int = 10 * 60 * 1_000_000
    shards: int = 64
    identity_shards: int = 16
    session_hits: str = "full"
    input_format: str = "spec"
    identity_rules: str = "classic"

    def __post_init__(self) -> None:
        if self.session_duration_us <= 0:
            raise ValueError("session duration must be positive")
        if self.tick_interval_us < 0 or self.allowed_lateness_us < 0:
            raise ValueError("tick interval and allowed lateness must not be negative")
        if self.max_events < 1:
            raise ValueError("max events must be at least 1")
        if self.max_duration_us <= 0:
            raise ValueError("max duration must be positive")
        if self.eviction_strategy not in EVICTION_STRATEGIES:
            raise ValueError(f"eviction strategy must be one of {', '.join(EVICTION_STRATEGIES)}")
        if self.session_hits not in SESSION_HITS:
            raise ValueError(f"session hits must be one of {', '.join(SESSION_HITS)}, "
                             f"not {self.session_hits!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input format must be one of {', '.join(INPUT_FORMATS)}, "
                             f"not {self.input_format!r}")
        if self.identity_rules not in IDENTITY_RULES:
            raise ValueError(f"identity rules must be one of {', '.join(IDENTITY_RULES)}, "
                             f"not {self.identity_rules!r}")
        if self.compaction_threshold < 0 or self.max_hit_bytes < 1:
            raise ValueError("compaction threshold must be >= 0 and max hit bytes >= 1")
        if not 1 <= self.shards <= 65536 or not 1 <= self.identity_shards <= 65536:
            raise ValueError("shards and identity shards must be between 1 and 65536")

    @property
    def tick_us(self) -> int:
        """The bucket width; a tick interval of 0 means one bucket a second."""
        return self.tick_interval_us or 1_000_000

    @classmethod
    def from_strings(cls, **values: str | bool | int) -> "Settings":
        """Build from CLI/env text: durations like `30m`, sizes like `64KiB`."""
        kw: dict = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in ("session_duration", "tick_interval", "max_duration",
                        "allowed_lateness", "max_future_skew"):
                kw[name + "_us"] = parse_duration_us(str(value))
            elif name in ("compaction_threshold", "max_hit_bytes"):
                kw[name] = parse_size(str(value))
            elif name in ("max_events", "shards", "identity_shards"):
                kw[name] = int(value)
            else:
                kw[name] = value
        return cls(**kw)
