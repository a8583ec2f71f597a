"""keys.py (names and timing-wheel bucket arithmetic), units.py (durations and
sizes) and config.Settings validation."""

from __future__ import annotations

import pytest

from protosessions import keys
from protosessions.config import Settings
from protosessions.units import format_duration_us, parse_duration_us, parse_size

S = 1_000_000


# --- bucket_number -----------------------------------------------------------

@pytest.mark.parametrize("time, tick, want", [
    (0, 1, 0), (59.999, 1, 59), (60, 1, 60), (60, 10, 6), (69.9, 10, 6), (70, 10, 7),
    (1.5, 0.5, 3), (1735732800.25, 1, 1735732800),
])
def test_bucket_number(time, tick, want) -> None:
    assert keys.bucket_number(time, tick) == want


@pytest.mark.parametrize("tick", [0, -1, -0.5])
def test_bucket_number_tick_zero_or_less_is_one_bucket_a_second(tick) -> None:
    for t in (0, 0.5, 1, 1.999, 2, 3600.7):
        assert keys.bucket_number(t, tick) == keys.bucket_number(t, 1) == int(t // 1)


def test_bucket_number_us_matches_seconds_version() -> None:
    for t_us in (0, 1, S - 1, S, 59 * S + 999_999, 61 * S):
        for tick_us in (0, 500_000, S, 17 * S):
            assert keys.bucket_number_us(t_us, tick_us) == keys.bucket_number(t_us / S, tick_us / S)
    assert keys.bucket_number_us(5 * S + 3, 0) == 5
    assert keys.bucket_number_us(5 * S + 3, 1) == 5 * S + 3
    assert keys.bucket_number_us(5 * S + 3, 2 * S) == 2


# --- buckets_key / buckets_parse_number ---------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7, 1735732800, 10**15, -3])
def test_buckets_key_round_trip(n: int) -> None:
    key = keys.buckets_key(n)
    assert key == f"sessions.buckets.{n}"
    assert keys.buckets_parse_number(key) == n


@pytest.mark.parametrize("key", [
    "", "sessions.buckets", "sessions.buckets.", "sessions.buckets.x", "sessions.buckets.1.5",
    "sessions.bucket.5", "sessions.hits.5", "Sessions.buckets.5", "5",
    "sessions.buckets.next",  # the `next` pointer is not a bucket
])
def test_buckets_parse_number_malformed_raises_value_error_naming_key(key: str) -> None:
    with pytest.raises(ValueError) as e:
        keys.buckets_parse_number(key)
    assert repr(key) in str(e.value)


def test_next_bucket_key_is_not_a_bucket_number() -> None:
    assert keys.NEXT_BUCKET_KEY == "sessions.buckets.next"
    with pytest.raises(ValueError):
        keys.buckets_parse_number(keys.NEXT_BUCKET_KEY)


@pytest.mark.parametrize("key", ["sessions.buckets.1_000", "sessions.buckets. 7",
                                 "sessions.buckets.7 ", "sessions.buckets.\u0663"])
def test_buckets_parse_number_rejects_non_canonical_numbers(key: str) -> None:
    with pytest.raises(ValueError):
        keys.buckets_parse_number(key)


# --- key functions -------------------------------------------------------------

def test_key_functions_exact_strings() -> None:
    assert keys.expiration_key("cid-1") == "sessions.expiration.cid-1"
    assert keys.proto_session_hits_key("cid-1") == "sessions.hits.cid-1"
    assert keys.compacted_hits_key("cid-1") == "sessions.hits.compacted.cid-1"
    assert keys.session_stamp_key("1.2.3.4") == "sessions.stamps.1.2.3.4"
    assert keys.session_stamp_by_client_id_key("cid-1") == "sessions.stamps.by.client.id.cid-1"
    assert keys.buckets_key(42) == "sessions.buckets.42"


def test_prefixes() -> None:
    assert keys.BUCKETS_PREFIX == "sessions.buckets"
    assert keys.PROTO_SESSION_HITS_PREFIX == "sessions.hits"
    assert keys.COMPACTED_HITS_PREFIX == "sessions.hits.compacted"
    assert keys.SESSION_STAMP_PREFIX == "sessions.stamps"
    assert keys.SESSION_STAMP_BY_CLIENT_ID_PREFIX == "sessions.stamps.by.client.id"
    assert keys.EXPIRATION_PREFIX == "sessions.expiration"


# --- units ----------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("500ms", 500_000), ("5s", 5 * S), ("30m", 30 * 60 * S), ("24h", 24 * 3600 * S),
    ("1d", 86_400 * S), ("250us", 250), ("0s", 0), ("1.5s", 1_500_000), ("0.5m", 30 * S),
    (" 5s ", 5 * S), ("5 s", 5 * S),
])
def test_parse_duration_us(text: str, want: int) -> None:
    assert parse_duration_us(text) == want


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "-5s", "5S", "5 min", "1e3s", "5s5",
                                  "five s", "5ms s", ".5s"])
def test_parse_duration_us_errors(text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_duration_us(text)
    msg = str(e.value)
    assert repr(text) in msg and "500ms" in msg and "30m" in msg


@pytest.mark.parametrize("us", [1, 999, 1000, 5 * S, 90 * S, 3600 * S, 86_400 * S, 1500])
def test_format_duration_round_trip(us: int) -> None:
    assert parse_duration_us(format_duration_us(us)) == us


def test_format_duration_picks_largest_whole_unit() -> None:
    assert format_duration_us(30 * 60 * S) == "30m"
    assert format_duration_us(24 * 3600 * S) == "1d"
    assert format_duration_us(1500) == "1500us"
    assert format_duration_us(0) == "0us"


@pytest.mark.parametrize("text, want", [
    ("65536", 65536), ("0", 0), ("64KiB", 65536), ("64KB", 64000), ("1MiB", 1 << 20),
    ("1MB", 10**6), ("2GiB", 2 << 30), ("1GB", 10**9), ("10B", 10), (" 3 KiB ", 3072),
])
def test_parse_size(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "KiB", "1.5KiB", "-1", "64kib", "64 kB", "64K", "1TiB",
                                  "64KiBs", "0x10"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_size(text)
    assert repr(text) in str(e.value) and "64KiB" in str(e.value)


# --- Settings ---------------------------------------------------------------------

def test_settings_defaults_match_spec() -> None:
    s = Settings()
    assert s.session_duration_us == 30 * 60 * S
    assert s.tick_interval_us == S
    assert s.max_events == 10_000
    assert s.max_duration_us == 24 * 3600 * S
    assert s.allowed_lateness_us == 0
    assert s.join_by_session_stamp and s.join_by_user_id
    assert s.eviction_strategy == "rewrite"
    assert s.compaction_threshold == 64 * 1024
    assert s.max_hit_bytes == 65536
    assert s.max_future_skew_us == 10 * 60 * S


def test_settings_tick_us_zero_means_one_second() -> None:
    assert Settings(tick_interval_us=0).tick_us == S
    assert Settings(tick_interval_us=17 * S).tick_us == 17 * S


@pytest.mark.parametrize("kw, words", [
    ({"session_duration_us": 0}, "session duration"),
    ({"session_duration_us": -1}, "session duration"),
    ({"tick_interval_us": -1}, "tick interval"),
    ({"allowed_lateness_us": -1}, "allowed lateness"),
    ({"max_events": 0}, "max events"),
    ({"max_duration_us": 0}, "max duration"),
    ({"eviction_strategy": "drop"}, "eviction strategy"),
    ({"compaction_threshold": -1}, "compaction threshold"),
    ({"max_hit_bytes": 0}, "max hit bytes"),
    ({"shards": 0}, "shards"),
    ({"shards": 65537}, "shards"),
    ({"identity_shards": 0}, "identity shards"),
])
def test_settings_validation_errors(kw: dict, words: str) -> None:
    with pytest.raises(ValueError) as e:
        Settings(**kw)
    assert words in str(e.value)


def test_settings_boundaries_accepted() -> None:
    Settings(tick_interval_us=0, allowed_lateness_us=0, max_events=1, compaction_threshold=0,
             max_hit_bytes=1, shards=1, identity_shards=65536, eviction_strategy="evict")


def test_settings_from_strings() -> None:
    s = Settings.from_strings(session_duration="5m", tick_interval="0s", max_events="3",
                              max_duration="1h", allowed_lateness="500ms",
                              compaction_threshold="1KiB", max_hit_bytes="100",
                              max_future_skew="1m", shards=8, join_by_user_id=False,
                              eviction_strategy="evict", identity_shards=None)
    assert s == Settings(session_duration_us=5 * 60 * S, tick_interval_us=0, max_events=3,
                         max_duration_us=3600 * S, allowed_lateness_us=500_000,
                         compaction_threshold=1024, max_hit_bytes=100,
                         max_future_skew_us=60 * S, shards=8, join_by_user_id=False,
                         eviction_strategy="evict")


@pytest.mark.parametrize("kw", [{"session_duration": "30"}, {"session_duration": "0s"},
                                {"compaction_threshold": "1.5KiB"}, {"max_events": "0"},
                                {"tick_interval": "-1s"}])
def test_settings_from_strings_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        Settings.from_strings(**kw)


def test_settings_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception):
        s.max_events = 3  # type: ignore[misc]


@pytest.mark.parametrize("text,want", [
    ("", ()),
    ("a=1", ("a=1",)),
    ("a=1, b=2,", ("a=1", "b=2")),
    ("a=1\n", ("a=1",)),
    ("a=1\nsasl.oauthbearer.extensions=x=1,y=2\n\n", ("a=1", "sasl.oauthbearer.extensions=x=1,y=2")),
])
def test_split_list_lines_or_commas(text: str, want: tuple) -> None:
    from flows.options import from_env, split_list
    assert split_list(text) == want
    assert from_env({"PROTOSESSIONS_KAFKA_CONFIG": text})["kafka_config"] == want


def test_a_remembered_second_parses_as_the_full_parse() -> None:
    """`parse_time_us` reads only the fraction of a text whose second it has
    parsed before: on canonical, near-canonical and hostile texts, warm or
    cold, it answers what `datetime.fromisoformat` alone answers."""
    import random
    from datetime import datetime, timedelta, timezone

    from protosessions import timefmt

    def full(text: str) -> int | None:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None or ("T" not in text and "t" not in text and " " not in text):
            return None
        us = (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        return us if 0 <= us <= timefmt.MAX_US else None

    rnd = random.Random(5)
    seconds = ["2025-01-01T00:00:00", "1970-01-01T00:00:00", "9999-12-31T23:59:59",
               "2024-02-29T12:34:56", "2025-01-01 00:00:00", "2025-01-01t00:00:00",
               "1969-12-31T23:59:59", "2025-13-01T00:00:00", "2025-01-01T24:00:00"]
    fractions = ["000000", "999999", "123456", "12345\uff16", "+12345", "1_2345", " 12345",
                 "\u00b2\u00b3\u00b9000", "-00001"]
    texts = [s + "." + f + z for s in seconds for f in fractions for z in ("Z", "z", "+00:00")]
    for _ in range(3):  # cold, then warm, then shuffled
        rnd.shuffle(texts)
        for text in texts:
            assert timefmt.parse_time_us(text) == full(text), text
