"""Session metrics (SPEC "Session metrics"), the content-addressed session_id and
`--session-hits`, through the engine: hits in, session records out."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import example, given, settings as hyp_settings, strategies as st

from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.engine import Engine, SessionShard
from protosessions.hit import Hit, parse_hit
from protosessions.session import session_id
from protosessions.session_metrics import utm
from protosessions.timefmt import format_time_us
from spec_metrics import spec_metrics

S = 1_000_000
T0 = 1_740_816_000 * S  # 2025-03-01T08:00:00Z


def hit(id: str, t: int, cid: str = "c1", **params: str | list[str]) -> bytes:
    """One hit line; each keyword is a query parameter (a list gives every value)."""
    obj: dict = {"id": id, "client_id": cid, "property_id": "P",
                 "server_received_time": format_time_us(T0 + t)}
    if params:
        obj["query_params"] = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    return orjson.dumps(obj)


def run(lines: list[bytes], **kw) -> list[dict]:
    """Every session the engine closes for `lines` (one file, in order)."""
    kw.setdefault("join_by_session_stamp", False)
    out = Engine(Settings(**kw), future_check=False).run(lines)
    return [orjson.loads(b) for _, b in out]


def metrics(*lines: bytes) -> dict:
    """The metrics of the one session these hits make."""
    [session] = run(list(lines))
    return session["metrics"]


# --- each metric ------------------------------------------------------------------------------

def test_metrics_keys_in_spec_order_after_hits() -> None:
    [s] = run([hit("h1", 0)])
    assert list(s)[-2:] == ["hits", "metrics"]
    assert list(s["metrics"]) == ["duration_s", "events", "page_views", "engaged", "entry_page",
                                  "exit_page", "entry_title", "referrer", "utm"]


def test_duration_s_is_end_minus_start_to_the_microsecond() -> None:
    m = metrics(hit("h1", 0), hit("h2", 61 * S + 1), hit("h3", 5 * S))
    assert m["duration_s"] == 61.000001


def test_duration_s_of_one_hit_is_zero_written_as_a_number() -> None:
    [(_, data)] = Engine(Settings(), future_check=False).run([hit("h1", 0)])
    assert b'"duration_s":0.0,' in data


def test_events_count_by_name_in_first_seen_order() -> None:
    m = metrics(hit("h1", 0, en="scroll"), hit("h2", 1, en="page_view"), hit("h3", 2, en="scroll"),
                hit("h4", 3), hit("h5", 4, en=""), hit("h6", 5, en=[]))
    assert list(m["events"].items()) == [("scroll", 2), ("page_view", 1), ("(not set)", 3)]


def test_events_use_the_first_value_of_en() -> None:
    assert metrics(hit("h1", 0, en=["click", "page_view"]))["events"] == {"click": 1}


def test_page_views_count_page_view_hits_only() -> None:
    m = metrics(hit("h1", 0, en="page_view"), hit("h2", 1, en="screen_view"),
                hit("h3", 2, en="page_view"), hit("h4", 3, en="page_view_x"))
    assert m["page_views"] == 2


@pytest.mark.parametrize("ens,engaged", [
    (["scroll", "click"], False),
    (["page_view"], False),
    (["page_view", "page_view"], True),
    (["screen_view"], False),
    (["screen_view", "screen_view"], True),
    (["page_view", "screen_view"], False),
    (["purchase"], True),
])
def test_engaged_by_page_views_screen_views_or_purchase(ens: list[str], engaged: bool) -> None:
    lines = [hit(f"h{i}", i, en=en) for i, en in enumerate(ens)]
    assert metrics(*lines)["engaged"] is engaged


@pytest.mark.parametrize("seg,engaged", [
    ("1", True), ("2", True), ("-1", True), ("+3", True), ("007", True),
    ("0", False), ("00", False), ("-0", False), ("1.5", False), ("abc", False),
    (" 1", False), ("1_0", False), ("١", False), ("", False), ("+", False),
])
def test_engaged_by_seg_only_when_an_integer_other_than_zero(seg: str, engaged: bool) -> None:
    assert metrics(hit("h1", 0, en="scroll", seg=seg))["engaged"] is engaged


def test_seg_counts_from_any_hit_and_its_first_value_only() -> None:
    assert metrics(hit("h1", 0, seg="0"), hit("h2", 1, seg="1"))["engaged"] is True
    assert metrics(hit("h1", 0, seg=["0", "1"]))["engaged"] is False


def test_entry_and_exit_page_and_title_from_first_and_last_page_view() -> None:
    m = metrics(hit("h1", 0, en="scroll", dl="https://x/scrolled", dt="Scrolled"),
                hit("h2", 1, en="page_view", dl="https://x/a", dt="A"),
                hit("h3", 2, en="click", dl="https://x/clicked"),
                hit("h4", 3, en="page_view", dl="https://x/b", dt="B"),
                hit("h5", 4, en="scroll", dl="https://x/late"))
    assert (m["entry_page"], m["exit_page"], m["entry_title"]) == \
        ("https://x/a", "https://x/b", "A")


def test_pages_follow_hit_time_not_arrival() -> None:
    m = metrics(hit("h1", 5 * S, en="page_view", dl="https://x/later"),
                hit("h2", 0, en="page_view", dl="https://x/earlier"))
    assert (m["entry_page"], m["exit_page"]) == ("https://x/earlier", "https://x/later")


def test_entry_title_null_when_first_page_view_has_none() -> None:
    m = metrics(hit("h1", 0, en="page_view", dl="https://x/a"),
                hit("h2", 1, en="page_view", dl="https://x/b", dt="B"))
    assert m["entry_title"] is None


def test_no_page_view() -> None:
    m = metrics(hit("h1", 0, en="scroll", dl="https://x/?utm_source=s", dt="T"))
    assert m["page_views"] == 0
    assert (m["entry_page"], m["exit_page"], m["entry_title"], m["utm"]) == (None, None, None, {})


def test_page_view_without_dl() -> None:
    m = metrics(hit("h1", 0, en="page_view", dt="T"), hit("h2", 1, en="page_view", dl=""))
    assert (m["entry_page"], m["exit_page"], m["entry_title"], m["utm"]) == (None, None, "T", {})


def test_referrer_is_dr_of_the_first_hit_only() -> None:
    assert metrics(hit("h1", 0, dr="https://ref/1"), hit("h2", 1, dr="https://ref/2"))[
        "referrer"] == "https://ref/1"
    assert metrics(hit("h1", 0), hit("h2", 1, dr="https://ref/2"))["referrer"] is None
    assert metrics(hit("h1", 0, en="x"), hit("h2", 1, dr="https://ref/2"))["referrer"] is None


def test_utm_from_the_entry_page_without_prefix_in_spec_order() -> None:
    url = ("https://x/p?utm_content=c&utm_term=t&utm_campaign=k&utm_medium=m&utm_source=s"
           "&utm_id=9&q=1#utm_source=fragment")
    m = metrics(hit("h1", 0, en="page_view", dl=url),
                hit("h2", 1, en="page_view", dl="https://x/?utm_source=exit"))
    assert list(m["utm"].items()) == [("source", "s"), ("medium", "m"), ("campaign", "k"),
                                      ("term", "t"), ("content", "c")]


def test_utm_only_those_present() -> None:
    m = metrics(hit("h1", 0, en="page_view", dl="https://x/?utm_medium=cpc&utm_source="))
    assert m["utm"] == {"medium": "cpc"}


def test_utm_repeated_key_takes_the_first_value() -> None:
    m = metrics(hit("h1", 0, en="page_view", dl="https://x/?utm_source=a&utm_source=b"))
    assert m["utm"] == {"source": "a"}


def test_utm_percent_encoded_values_are_decoded() -> None:
    dl = "https://x/?utm_campaign=spring%20sale%2B1&utm_term=red+shoes&utm_source=%C3%A9t%C3%A9"
    m = metrics(hit("h1", 0, en="page_view", dl=dl))
    assert m["utm"] == {"source": "été", "campaign": "spring sale+1", "term": "red shoes"}


def test_utm_percent_encoded_keys_count() -> None:
    m = metrics(hit("h1", 0, en="page_view", dl="https://x/?utm%5Fsource=a&%75tm_medium=b"))
    assert m["utm"] == {"source": "a", "medium": "b"}


def spec_utm(url: str) -> dict[str, str]:
    """The SPEC's reading, literally: parse_qs of urlsplit's query, first values."""
    query = parse_qs(urlsplit(url).query)
    return {k[4:]: v[0] for k, v in query.items() if k in UTM_NAMES}


UTM_NAMES = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


@hyp_settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["utm_source", "utm", "ut", "tm", "m_source", "source", "_",
                                 "=", "&", "?", "#", "%5F", "%75", "%", "+", "\t", "\n", "a",
                                 "é", "/", ";"]), max_size=12))
@example(["utm%5Fsource=a"])
@example(["%75tm_source=a"])
@example(["ut\tm_source=a"])
@example(["utm_source=a&utm_source=b#utm_medium=c"])
def test_utm_reads_the_query_as_urlsplit_and_parse_qs_do(parts: list[str]) -> None:
    url = "https://x/p?" + "".join(parts)
    assert utm(url) == spec_utm(url)


def test_utm_of_a_url_urlsplit_refuses_is_empty() -> None:
    m = metrics(hit("h1", 0, en="page_view", dl="https://[::1/?utm_source=s"))
    assert (m["entry_page"], m["utm"]) == ("https://[::1/?utm_source=s", {})


# --- kept hit by hit, read in `hits` order ------------------------------------------------------

PARAMS = st.fixed_dictionaries({}, optional={
    "en": st.sampled_from(["page_view", "screen_view", "purchase", "scroll", "", "(not set)"]),
    "dl": st.sampled_from(["https://x/a", "https://x/b?utm_source=s&utm_term=t%20u", ""]),
    "dt": st.sampled_from(["A", "B", ""]),
    "dr": st.sampled_from(["https://r/1", "https://r/2", ""]),
    "seg": st.sampled_from(["0", "1", "x", "-2"]),
})


@hyp_settings(max_examples=200, deadline=None)
@given(hits=st.lists(st.tuples(st.integers(0, 6), PARAMS), min_size=1, max_size=12),
       threshold=st.sampled_from([0, 1, 700]), max_events=st.integers(1, 13),
       data=st.data())
def test_metrics_are_the_spec_reading_of_the_record(hits: list, threshold: int, max_events: int,
                                                    data: st.DataObject) -> None:
    """Late hits, ties, compaction and a snapshot/resume at any point: each
    record's metrics are what the SPEC reads from the record's own hits."""
    st_ = Settings(compaction_threshold=threshold, max_events=max_events, allowed_lateness_us=60 * S)
    parsed_hits = parsed([hit(f"h{i}", t * S, **p) for i, (t, p) in enumerate(hits)])
    cut = data.draw(st.integers(0, len(parsed_hits)))
    first = SessionShard(st_, Clock())
    out = first.on_hits(parsed_hits[:cut])
    resumed = SessionShard(st_, Clock(), pickle.loads(pickle.dumps(first.snapshot())))
    out += resumed.on_hits(parsed_hits[cut:]) + resumed.close_all()
    assert sum(orjson.loads(b)["hit_count"] for _, b in out) == len(hits)
    for _, data_ in out:
        record = orjson.loads(data_)
        want = spec_metrics(record["hits"], record["start"], record["end"])
        assert record["metrics"] == want
        assert list(record["metrics"]["events"]) == list(want["events"])  # first-seen order


# --- where the parameters are kept --------------------------------------------------------------

def rich_stream() -> list[bytes]:
    """Two sessions' worth of hits, every metric set, with padding to compact."""
    pad = "x" * 300
    return [
        hit("a1", 0, dr="https://ref/", en="page_view", seg="0", pad=pad,
            dl="https://x/?utm_source=s&utm_campaign=c%201", dt="Home"),
        hit("a2", 1 * S, en="scroll", pad=pad),
        hit("b1", 2 * S, cid="c2", en="screen_view", pad=pad),
        hit("a3", 3 * S, en="page_view", dl="https://x/b", dt="B", pad=pad),
        hit("b2", 4 * S, cid="c2", en="screen_view", seg="1", pad=pad),
        hit("a4", 5 * S, en="purchase", pad=pad),
    ]


def test_compacted_session_gives_the_same_metrics() -> None:
    plain = run(rich_stream(), compaction_threshold=0)
    engine = Engine(Settings(compaction_threshold=1, join_by_session_stamp=False),
                    future_check=False)
    compacted = [orjson.loads(b) for _, b in engine.run(rich_stream())]
    assert engine.sessions.stats["compactions"] == len(rich_stream())
    assert sorted(compacted, key=lambda s: s["session_id"]) == \
        sorted(plain, key=lambda s: s["session_id"])
    assert {s["metrics"]["engaged"] for s in plain} == {True}


def parsed(lines: list[bytes]) -> list[Hit]:
    out, clock = [], 0
    for raw in lines:
        h = parse_hit(raw, Settings(), None, clock)
        assert isinstance(h, Hit)
        clock = h.clock
        out.append(h)
    return out


@pytest.mark.parametrize("threshold", [0, 1])
def test_metrics_survive_a_snapshot_and_resume(threshold: int) -> None:
    st = Settings(compaction_threshold=threshold)
    hits = parsed(rich_stream())
    whole = SessionShard(st, Clock())
    whole.on_hits(hits)
    want = sorted(b for _, b in whole.close_all())
    for cut in range(1, len(hits)):
        first = SessionShard(st, Clock())
        first.on_hits(hits[:cut])
        snap = pickle.loads(pickle.dumps(first.snapshot()))  # as the recovery store keeps it
        resumed = SessionShard(st, Clock(), snap)
        resumed.on_hits(hits[cut:])
        assert sorted(b for _, b in resumed.close_all()) == want, cut


# --- session_id ---------------------------------------------------------------------------------

def test_session_id_is_sha256_of_the_compact_json_array() -> None:
    [s] = run([hit("h2", 1), hit("é", 0)])
    want = hashlib.sha256('["P","c1",["é","h2"]]'.encode()).hexdigest()[:32]
    assert s["session_id"] == want


def test_session_id_separators_inside_ids_cannot_collide() -> None:
    assert session_id("P\nx", "y", ["h"]) != session_id("P", "x\ny", ["h"])
    assert session_id("P", "x", ["a", "b"]) != session_id("P", "x", ['a","b'])
    assert session_id("P", "x", ["a,b"]) != session_id("P", "x", ["a", "b"])


def test_session_id_order_of_hits_matters() -> None:
    assert session_id("P", "x", ["a", "b"]) != session_id("P", "x", ["b", "a"])


@hyp_settings(max_examples=300, deadline=None)
@given(st.tuples(st.text(), st.text(), st.lists(st.text(), max_size=4)),
       st.tuples(st.text(), st.text(), st.lists(st.text(), max_size=4)))
def test_different_contents_never_share_a_session_id(a: tuple, b: tuple) -> None:
    assert (session_id(*a) == session_id(*b)) == (a == b)


def test_session_id_names_the_content_whatever_split() -> None:
    """The same hits give the same id whatever closed them before (a resume
    re-sends a session with the id it had), other hits another id."""
    lines = [hit("h1", 0), hit("h2", 1 * S)]
    [first] = run(lines)
    [again] = run(lines, compaction_threshold=1)
    assert first["session_id"] == again["session_id"]
    split = run(lines, max_events=1)
    assert len({s["session_id"] for s in split} | {first["session_id"]}) == 3


# --- --session-hits -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["ids", "none"])
def test_session_hits_ids_and_none_change_only_hits(mode: str) -> None:
    full = {s["session_id"]: s for s in run(rich_stream())}
    other = {s["session_id"]: s for s in run(rich_stream(), session_hits=mode)}
    assert set(other) == set(full)
    for sid, s in other.items():
        want = dict(full[sid])
        hits = want.pop("hits")
        if mode == "ids":
            assert list(s) == list(full[sid])
            assert s.pop("hits") == [h["id"] for h in hits]
        else:
            assert "hits" not in s
        assert s == want


def test_session_hits_bad_value_is_refused() -> None:
    with pytest.raises(ValueError, match="full, ids, none"):
        Settings(session_hits="some")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_session_hits_flag_usage_error_and_help(tmp_path) -> None:
    proc = cli("run", "--input", os.devnull, "--session-hits", "some")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "full" in proc.stderr
    proc = cli("run", "--input", os.devnull, env={"PROTOSESSIONS_SESSION_HITS": "some"})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "full, ids, none" in proc.stderr
    assert "{full,ids,none}" in cli("run", "--help").stdout


def test_session_hits_from_the_environment(tmp_path) -> None:
    src, out = tmp_path / "hits.jsonl", tmp_path / "sessions.jsonl"
    src.write_bytes(hit("h1", 0) + b"\n" + hit("h2", 1) + b"\n")
    proc = cli("run", "--input", str(src), "--output", str(out),
               env={"PROTOSESSIONS_SESSION_HITS": "ids"})
    assert proc.returncode == 0, proc.stderr
    [s] = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert s["hits"] == ["h1", "h2"]
