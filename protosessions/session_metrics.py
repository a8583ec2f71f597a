"""Session metrics (SPEC "Session metrics").

A session's metrics read five query parameters of its hits. They are taken
once, where the hit is parsed anyway (`hit_params`), and folded into the
proto-session's `SessionMetrics` as each hit is stored: closing a session
never parses its hits again, and compaction and snapshots, which copy every
stored hit, carry a few aggregates instead of five values per hit.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

NOT_SET = "(not set)"
PAGE_VIEW = "page_view"
PURCHASE = "purchase"
UTM_KEYS = ("source", "medium", "campaign", "term", "content")

# What the metrics read of one hit: `(event name, dl, dt, dr, seg_engaged)`.
HitParams = tuple
NO_PARAMS: HitParams = (NOT_SET, None, None, None, False)
_NEVER = 1 << 63  # later than any hit time


def seg_engages(seg: str | None) -> bool:
    """`seg` is an integer other than 0: ASCII digits, optionally signed.

    Stricter than `int()`, which would also take " 1", "1_0" or non-ASCII
    digits that no tracker sends."""
    if seg is None:
        return False
    digits = seg[1:] if seg[:1] in ("+", "-") else seg
    return digits.isascii() and digits.isdigit() and digits.strip("0") != ""


def hit_params(query_params: Mapping[str, list[str]] | None) -> HitParams:
    """What the metrics need of one hit, from its (validated) `query_params`.

    Runs for every hit, so it is written out flat. Each value is the SPEC
    "parameter": the first value, None where absent, an empty list or "";
    the event name is `(not set)` where it has none. `dl` and `dt` are only
    ever read from `page_view` hits, so other hits do not keep them; `seg`
    is kept as the one bit the metrics read of it."""
    if not query_params:
        return NO_PARAMS
    get = query_params.get
    v = get("en")
    en = (v[0] or NOT_SET) if v else NOT_SET
    v = get("dr")
    dr = (v[0] or None) if v else None
    v = get("seg")
    if v:
        first = v[0]
        seg = first == "1" or (first != "0" and seg_engages(first))
    else:
        seg = False
    if en == PAGE_VIEW:
        v = get("dl")
        dl = (v[0] or None) if v else None
        v = get("dt")
        return (PAGE_VIEW, dl, (v[0] or None) if v else None, dr, seg)
    return (en, None, None, dr, seg)


def utm(url: str | None) -> dict[str, str]:
    """The UTM parameters of a URL's query, first value each, without the
    `utm_` prefix. A URL that `urlsplit` refuses (e.g. an unbalanced `[` in
    its host) has no readable query: `{}`."""
    if url is None:
        return {}
    if "utm_" not in url and "%" not in url and url.isprintable():
        return {}  # nothing urlsplit/parse_qs could decode into a `utm_` key: skip them
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {k: query["utm_" + k][0] for k in UTM_KEYS if "utm_" + k in query}


class SessionMetrics:
    """The metrics of one proto-session, kept up to date hit by hit.

    The SPEC reads hits in `hits` order: by time, ties in arrival order. A
    hit stored later precedes an earlier-stored one only when its time is
    strictly smaller, so "first" and "last" are kept with their time and the
    events with where each name first occurs (time, arrival number): a late
    hit lands where `hits` will put it.
    """

    __slots__ = ("events", "in_order", "last_new_t", "first_t", "referrer", "entry_t",
                 "entry", "title", "exit_t", "exit", "seg")

    def __init__(self) -> None:
        self.events: dict[str, list[int]] = {}  # name -> [count, first time, first arrival]
        self.in_order = True  # `events` is in first-seen order already (no late hit moved it)
        self.last_new_t = -1  # first time of the name added last
        self.first_t = self.entry_t = _NEVER  # times of the first hit, first page_view
        self.exit_t = -1  # time of the last page_view
        self.referrer: str | None = None  # dr of the first hit
        self.entry: str | None = None  # dl and dt of the first page_view
        self.title: str | None = None
        self.exit: str | None = None  # dl of the last page_view
        self.seg = False

    def add(self, t: int, arrival: int, params: HitParams) -> None:
        """Fold in one hit: its time, arrival number in the proto-session
        (0, 1, ...) and `hit_params`. Runs for every hit: flat on purpose."""
        name, dl, dt, dr, seg = params
        if t < self.first_t:
            self.first_t = t
            self.referrer = dr
        if name == PAGE_VIEW:
            if t < self.entry_t:
                self.entry_t, self.entry, self.title = t, dl, dt
            if t >= self.exit_t:
                self.exit_t, self.exit = t, dl
        if seg:
            self.seg = True
        seen = self.events.get(name)
        if seen is None:
            self.events[name] = [1, t, arrival]
            if t < self.last_new_t:
                self.in_order = False
            self.last_new_t = t
        else:
            seen[0] += 1
            if t < seen[1]:
                seen[1] = t
                seen[2] = arrival
                self.in_order = False

    def result(self, start: int, end: int) -> dict[str, Any]:
        """The SPEC's `metrics` object; `start`/`end` in microseconds."""
        counts = self.events
        if self.in_order:  # the common case: no hit came late, no sort
            events = {name: c[0] for name, c in counts.items()}
        else:
            events = {name: c[0] for name, c in sorted(counts.items(), key=_first_seen)}
        page_views = events.get(PAGE_VIEW, 0)
        return {
            "duration_s": (end - start) / 1_000_000,
            "events": events,
            "page_views": page_views,
            "engaged": (self.seg or page_views >= 2 or events.get("screen_view", 0) >= 2
                        or PURCHASE in events),
            "entry_page": self.entry,
            "exit_page": self.exit,
            "entry_title": self.title,
            "referrer": self.referrer,
            "utm": utm(self.entry),
        }

    def to_state(self) -> tuple:
        """Plain, immutable form for snapshots."""
        return (tuple((k, *v) for k, v in self.events.items()), self.in_order, self.last_new_t,
                self.first_t, self.referrer, self.entry_t, self.entry, self.title, self.exit_t,
                self.exit, self.seg)

    @classmethod
    def from_state(cls, state: tuple) -> "SessionMetrics":
        m = cls()
        (events, m.in_order, m.last_new_t, m.first_t, m.referrer, m.entry_t, m.entry, m.title,
         m.exit_t, m.exit, m.seg) = state
        m.events = {k: [c, t, a] for k, c, t, a in events}
        return m


def _first_seen(item: tuple[str, list[int]]) -> tuple[int, int]:
    return item[1][1], item[1][2]
