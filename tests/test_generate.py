"""Tests for protosessions.generate (synthetic GA4 /g/collect hits)."""

from __future__ import annotations

import io
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protosessions.generate import generate_hits, write_hits

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
CID_RE = re.compile(r"^\d{9,10}\.\d{1,10}$")
PROP_RE = re.compile(r"^G-[A-Z0-9]{10}$")
ID_RE = re.compile(r"^[0-9a-f]{16}$")
IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")

REQUIRED = {
    "id": str,
    "client_id": str,
    "property_id": str,
    "server_received_time": str,
    "ip": str,
    "host": str,
    "method": str,
    "path": str,
    "query_params": dict,
    "headers": dict,
}
OPTIONAL = {"user_id": str, "metadata": dict}
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def ts(hit: dict) -> datetime:
    return datetime.fromisoformat(hit["server_received_time"])


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(generate_hits(20_000, 1_000, seed=7))


@pytest.fixture(scope="module")
def hits(lines: list[bytes]) -> list[dict]:
    return [orjson.loads(line) for line in lines]


@pytest.fixture(scope="module")
def originals(hits: list[dict]) -> list[dict]:
    """Hits without their retries (first occurrence of each id)."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h["id"] not in seen:
            seen.add(h["id"])
            out.append(h)
    return out


# --- determinism and counts -------------------------------------------------


def test_same_seed_same_bytes() -> None:
    a = list(generate_hits(3_000, 200, seed=11))
    b = list(generate_hits(3_000, 200, seed=11))
    assert a == b


def test_other_seed_other_bytes() -> None:
    a = list(generate_hits(3_000, 200, seed=11))
    b = list(generate_hits(3_000, 200, seed=12))
    assert a != b
    assert not {orjson.loads(x)["id"] for x in a} & {orjson.loads(x)["id"] for x in b}


def test_other_args_other_bytes() -> None:
    base = list(generate_hits(1_000, 100, seed=1))
    assert base != list(generate_hits(1_000, 101, seed=1))
    assert base != list(generate_hits(1_000, 100, seed=1, properties=4))
    assert base != list(generate_hits(1_000, 100, seed=1, start=START + timedelta(days=1)))


@pytest.mark.parametrize(
    ("n", "clients"), [(0, 10), (1, 1), (2, 1), (17, 3), (1_000, 5_000), (5_000, 50)]
)
def test_count_exact(n: int, clients: int) -> None:
    out = list(generate_hits(n, clients, seed=3))
    assert len(out) == n
    assert all(isinstance(x, bytes) and not x.endswith(b"\n") for x in out)


def test_write_hits_matches_generate_hits() -> None:
    buf = io.BytesIO()
    n = write_hits(buf, 5_000, 300, seed=5)
    assert n == 5_000
    expected = b"".join(line + b"\n" for line in generate_hits(5_000, 300, seed=5))
    assert buf.getvalue() == expected


def test_write_hits_zero() -> None:
    buf = io.BytesIO()
    assert write_hits(buf, 0, 10, seed=1) == 0
    assert buf.getvalue() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hits": -1, "clients": 1},
        {"hits": 1, "clients": 0},
        {"hits": 1, "clients": 1, "properties": 0},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_hits(seed=1, **kwargs)
    with pytest.raises(ValueError):
        write_hits(io.BytesIO(), seed=1, **kwargs)


# --- shape of each hit ------------------------------------------------------


def check_hit(line: bytes, hit: dict) -> None:
    # exactly what orjson.dumps writes for the parsed object (no trailing newline)
    assert orjson.dumps(hit) == line
    for name, typ in REQUIRED.items():
        assert isinstance(hit[name], typ), name
    assert set(hit) <= set(REQUIRED) | set(OPTIONAL)
    for name, typ in OPTIONAL.items():
        if name in hit:
            assert isinstance(hit[name], typ), name
    assert ID_RE.match(hit["id"])
    assert CID_RE.match(hit["client_id"])
    assert PROP_RE.match(hit["property_id"])
    assert TIME_RE.match(hit["server_received_time"])
    assert ts(hit).tzinfo is not None and ts(hit).utcoffset() == timedelta(0)
    m = IPV4_RE.match(hit["ip"])
    assert m and all(0 <= int(g) <= 255 for g in m.groups())
    assert hit["host"]
    assert hit["method"] in ("GET", "POST")
    assert hit["path"] == "/g/collect"
    qp = hit["query_params"]
    for key, values in qp.items():
        assert isinstance(key, str)
        assert isinstance(values, list) and values
        assert all(isinstance(v, str) for v in values)
    assert qp["v"] == ["2"]
    assert qp["tid"] == [hit["property_id"]]
    assert qp["cid"] == [hit["client_id"]]
    assert qp["en"][0] in {
        "page_view", "user_engagement", "scroll", "click", "view_item",
        "add_to_cart", "begin_checkout", "screen_view", "purchase",
    }
    assert qp["dl"][0].startswith("https://")
    assert qp["dt"][0].endswith(" | " + qp["dl"][0].split(".")[1].replace("-", " ").title())
    assert qp["seg"] in (["0"], ["1"])
    if "dr" in qp:
        assert qp["dr"][0] and "utm_" not in qp["dr"][0]
    assert qp["sid"][0].isdigit()
    assert qp["sct"][0].isdigit()
    if "sessionStamp" in qp:
        assert qp["sessionStamp"][0].startswith(qp["sid"][0] + ".")
    headers = hit["headers"]
    assert set(headers) == {"user-agent", "accept-language"}
    for values in headers.values():
        assert isinstance(values, list) and values
        assert all(isinstance(v, str) and v for v in values)
    if "user_id" in hit:
        assert hit["user_id"] and qp["uid"] == [hit["user_id"]]
    else:
        assert "uid" not in qp
    if "metadata" in hit:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in hit["metadata"].items())


def test_every_line_well_formed(lines: list[bytes], hits: list[dict]) -> None:
    assert len(lines) == 20_000
    for line, hit in zip(lines, hits):
        check_hit(line, hit)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 400),
    clients=st.integers(1, 300),
    seed=st.integers(0, 2**64),
    properties=st.integers(1, 15),
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
        timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=-5))]),
    ),
)
def test_any_arguments(n: int, clients: int, seed: int, properties: int, start: datetime) -> None:
    out = list(generate_hits(n, clients, seed, start=start, properties=properties))
    assert len(out) == n
    parsed = [orjson.loads(x) for x in out]
    for line, hit in zip(out, parsed):
        check_hit(line, hit)
    aware = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    assert all(ts(h) >= aware for h in parsed)
    assert len({h["property_id"] for h in parsed}) <= properties
    assert len({h["client_id"] for h in parsed}) <= clients


# --- time -------------------------------------------------------------------


def test_default_start_and_span(originals: list[dict]) -> None:
    first, last = ts(originals[0]), ts(originals[-1])
    assert START <= first < START + timedelta(minutes=5)
    # ~10 min of traffic per (hits / clients): 20 -> a few hours
    assert timedelta(hours=1) < last - first < timedelta(hours=8)


def test_custom_start() -> None:
    start = datetime(2024, 6, 30, 23, 59, 59, 999_000, tzinfo=timezone.utc)
    out = [orjson.loads(x) for x in generate_hits(500, 50, seed=2, start=start)]
    assert ts(out[0]) >= start
    naive = generate_hits(500, 50, seed=2, start=start.replace(tzinfo=None))
    assert [orjson.loads(x) for x in naive] == out  # a naive start is taken as UTC


def test_times_non_decreasing_except_retries(hits: list[dict], originals: list[dict]) -> None:
    times = [ts(h) for h in originals]
    assert times == sorted(times)
    # a retry is never more than a couple of seconds older than the line before it
    for prev, cur in zip(hits, hits[1:]):
        assert ts(cur) >= ts(prev) - timedelta(seconds=3)


# --- realism ----------------------------------------------------------------


def test_distinct_clients_close_to_requested(originals: list[dict]) -> None:
    distinct = len({h["client_id"] for h in originals})
    assert 700 <= distinct <= 1_300


def test_zipf_like_activity(originals: list[dict]) -> None:
    per_client = sorted(Counter(h["client_id"] for h in originals).values(), reverse=True)
    median = per_client[len(per_client) // 2]
    assert per_client[0] >= 20 * median
    assert median <= 20  # most clients have few hits


def test_property_traffic_skewed(originals: list[dict]) -> None:
    counts = Counter(h["property_id"] for h in originals).most_common()
    assert len(counts) == 3
    assert counts[0][1] > 1.5 * counts[-1][1]
    # one host per property
    hosts = defaultdict(set)
    for h in originals:
        hosts[h["property_id"]].add(h["host"])
    assert all(len(v) == 1 for v in hosts.values())


def test_sessions_with_short_and_long_gaps(originals: list[dict]) -> None:
    last: dict[str, datetime] = {}
    short = long = 0  # gaps between 5 and 30 minutes / above 30 minutes
    sids: dict[str, set[str]] = defaultdict(set)
    for h in originals:
        t = ts(h)
        cid = h["client_id"]
        if cid in last:
            gap = t - last[cid]
            if gap > timedelta(minutes=30):
                long += 1
            elif gap > timedelta(minutes=5):
                short += 1
        last[cid] = t
        sids[cid].add(h["query_params"]["sid"][0])
    assert short > 100 and long > 100
    # many clients have several (GA) sessions
    assert sum(len(s) >= 3 for s in sids.values()) > 50


def test_sid_changes_only_after_30_minutes(originals: list[dict]) -> None:
    prev: dict[str, dict] = {}
    for h in originals:
        p = prev.get(h["client_id"])
        if p is not None:
            gap = ts(h) - ts(p)
            same = h["query_params"]["sid"] == p["query_params"]["sid"]
            assert same == (gap <= timedelta(minutes=30))
            sct, psct = int(h["query_params"]["sct"][0]), int(p["query_params"]["sct"][0])
            assert sct == psct + (0 if same else 1)
        else:
            assert h["query_params"]["en"] == ["page_view"]
        prev[h["client_id"]] = h


def test_logged_in_users_on_several_devices(originals: list[dict]) -> None:
    clients_of = defaultdict(set)
    for h in originals:
        if "user_id" in h:
            clients_of[h["user_id"]].add(h["client_id"])
    assert clients_of
    assert any(len(c) >= 2 for c in clients_of.values())
    assert all(len(c) <= 3 for c in clients_of.values())
    logged_clients = set().union(*clients_of.values())
    assert 0.02 * 1_000 <= len(logged_clients) <= 0.08 * 1_000
    # "some of their hits": logged-in clients also send anonymous hits
    anon = {h["client_id"] for h in originals if "user_id" not in h}
    assert logged_clients & anon


def test_shared_nat_ips(originals: list[dict]) -> None:
    clients_of = defaultdict(set)
    for h in originals:
        clients_of[h["ip"]].add(h["client_id"])
    shared = [c for c in clients_of.values() if len(c) >= 2]
    assert shared
    behind_nat = set().union(*shared)
    assert 0.05 * 1_000 <= len(behind_nat) <= 0.2 * 1_000
    # some clients change address
    ips_of = defaultdict(set)
    for h in originals:
        ips_of[h["client_id"]].add(h["ip"])
    assert any(len(v) >= 2 for v in ips_of.values())


def test_retries_repeat_the_exact_line(lines: list[bytes], hits: list[dict]) -> None:
    first_at: dict[str, int] = {}
    retries = 0
    for k, h in enumerate(hits):
        if h["id"] in first_at:
            j = first_at[h["id"]]
            assert lines[k] == lines[j]
            assert 1 <= k - j <= 6
            retries += 1
        else:
            first_at[h["id"]] = k
    assert 0.005 * len(lines) <= retries <= 0.02 * len(lines)
    assert max(Counter(h["id"] for h in hits).values()) == 2


def test_session_stamps(originals: list[dict]) -> None:
    stamped = [h for h in originals if "sessionStamp" in h["query_params"]]
    assert 0.002 * len(originals) <= len(stamped) <= 0.01 * len(originals)
    # one stamp per (client, sid)
    stamp_of: dict[tuple[str, str], str] = {}
    for h in stamped:
        key = (h["client_id"], h["query_params"]["sid"][0])
        stamp = h["query_params"]["sessionStamp"][0]
        assert stamp_of.setdefault(key, stamp) == stamp


# --- what the session metrics read -------------------------------------------


def landings(originals: list[dict]) -> list[dict]:
    """The first hit of each GA session (client, sid): a landing page view."""
    seen: set[tuple[str, str]] = set()
    out = []
    for h in originals:
        key = (h["client_id"], h["query_params"]["sid"][0])
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def test_campaign_landing_pages(originals: list[dict]) -> None:
    first = landings(originals)
    tagged = [h for h in first if "utm_source=" in h["query_params"]["dl"][0]]
    assert 0.06 * len(first) <= len(tagged) <= 0.2 * len(first)
    queries = [parse_qs(urlsplit(h["query_params"]["dl"][0]).query) for h in tagged]
    assert all({"utm_source", "utm_medium", "utm_campaign"} <= set(q) for q in queries)
    assert any("utm_term" in q for q in queries) and any("utm_content" in q for q in queries)
    assert any(" " in q["utm_campaign"][0] for q in queries)  # percent-encoded on the wire
    # a tagged URL is a page view's, and events after it on that page repeat it
    prev: dict[str, dict] = {}
    for h in originals:
        qp = h["query_params"]
        if "utm_source=" in qp["dl"][0] and qp["en"] != ["page_view"]:
            assert prev[h["client_id"]]["query_params"]["dl"] == qp["dl"]
        prev[h["client_id"]] = h


def test_referrers_only_on_the_landing_page(originals: list[dict]) -> None:
    first = landings(originals)
    referred = [h for h in first if "dr" in h["query_params"]]
    assert 0.25 * len(first) <= len(referred) <= 0.6 * len(first)
    prev: dict[str, dict] = {}
    for h in originals:
        qp = h["query_params"]
        p = prev.get(h["client_id"])
        if "dr" in qp and qp["en"] != ["page_view"]:
            # kept from the landing page view until the next page view
            assert p is not None and p["query_params"].get("dr") == qp["dr"]
            assert p["query_params"]["dl"] == qp["dl"]
        prev[h["client_id"]] = h


def test_seg_follows_ga4_engagement(originals: list[dict]) -> None:
    start: dict[tuple[str, str], datetime] = {}
    page_views: Counter[tuple[str, str]] = Counter()
    purchased: set[tuple[str, str]] = set()
    engaged = 0
    for h in originals:
        qp = h["query_params"]
        key = (h["client_id"], qp["sid"][0])
        start.setdefault(key, ts(h))
        page_views[key] += qp["en"] == ["page_view"]
        if qp["en"] == ["purchase"]:
            purchased.add(key)
        want = (ts(h) - start[key] >= timedelta(seconds=10) or page_views[key] >= 2
                or key in purchased)
        assert qp["seg"] == (["1"] if want else ["0"])
        engaged += want
    assert 0.2 * len(originals) < engaged < 0.95 * len(originals)


def test_screen_views_and_purchases(originals: list[dict]) -> None:
    events = Counter(h["query_params"]["en"][0] for h in originals)
    assert 0.005 * len(originals) <= events["screen_view"] <= 0.04 * len(originals)
    assert 0 < events["purchase"] <= 0.01 * len(originals)
