"""Session metrics (SPEC "Session metrics").

A session's metrics read five query parameters of its hits. They are taken
once, where the hit is parsed anyway (`hit_params`), and stored beside the
hit's bytes, so closing a session never parses its hits again.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

NOT_SET = "(not set)"
PAGE_VIEW = "page_view"
PURCHASE = "purchase"
UTM_KEYS = ("source", "medium", "campaign", "term", "content")

# What a stored hit keeps for the metrics: `(en, dl, dt, dr, seg_engaged)`,
# or None when none of them is set (the common case costs no tuple).
HitParams = tuple


def seg_engages(seg: str | None) -> bool:
    """`seg` is an integer other than 0: ASCII digits, optionally signed.

    Stricter than `int()`, which would also take " 1", "1_0" or non-ASCII
    digits that no tracker sends."""
    if seg is None:
        return False
    digits = seg[1:] if seg[:1] in ("+", "-") else seg
    return digits.isascii() and digits.isdigit() and digits.strip("0") != ""


def hit_params(query_params: Mapping[str, list[str]] | None) -> HitParams | None:
    """What the metrics need of one hit, from its (validated) `query_params`.

    Runs for every hit, so it is written out flat. Each value is the SPEC
    "parameter": the first value, None where absent, an empty list or "".
    `dl` and `dt` are only ever read from `page_view` hits, so other hits do
    not keep them; `seg` is kept as the one bit the metrics read of it."""
    if not query_params:
        return None
    get = query_params.get
    v = get("en")
    en = (v[0] or None) if v else None
    v = get("dr")
    dr = (v[0] or None) if v else None
    v = get("seg")
    if v:
        seg = v[0]
        seg = seg == "1" or (seg != "0" and seg_engages(seg))
    else:
        seg = False
    if en == "page_view":
        v = get("dl")
        dl = (v[0] or None) if v else None
        v = get("dt")
        return (PAGE_VIEW, dl, (v[0] or None) if v else None, dr, seg)
    if en is None:
        return (None, None, None, dr, seg) if dr is not None or seg else None
    return (sys.intern(en), None, None, dr, seg)  # few names: shared in memory and pickles


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


def session_metrics(first_t: int, last_t: int,
                    params: Sequence[HitParams | None]) -> dict[str, Any]:
    """The metrics of a session whose hits (in `hits` order) carry `params`;
    `first_t`/`last_t` are its start and end in microseconds."""
    events: dict[str, int] = {}
    count = events.get
    entry = exit_page = title = None
    seg = False
    for p in params:
        if p is None:
            events[NOT_SET] = count(NOT_SET, 0) + 1
            continue
        name = p[0]
        if name == PAGE_VIEW:
            if PAGE_VIEW not in events:
                entry, title = p[1], p[2]
            exit_page = p[1]
        elif name is None:
            name = NOT_SET
        events[name] = count(name, 0) + 1
        if p[4]:
            seg = True
    first = params[0] if params else None
    page_views = count(PAGE_VIEW, 0)
    return {
        "duration_s": (last_t - first_t) / 1_000_000,
        "events": events,
        "page_views": page_views,
        "engaged": (seg or page_views >= 2 or count("screen_view", 0) >= 2
                    or PURCHASE in events),
        "entry_page": entry,
        "exit_page": exit_page,
        "entry_title": title,
        "referrer": None if first is None else first[3],
        "utm": utm(entry),
    }
