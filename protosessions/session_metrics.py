"""Session metrics (SPEC "Session metrics").

A session's metrics read five query parameters of its hits. They are taken
once, where the hit is parsed anyway (`hit_params`), and stored beside the
hit's bytes, so closing a session never parses its hits again.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

NOT_SET = "(not set)"
UTM_KEYS = ("source", "medium", "campaign", "term", "content")

# What a stored hit keeps for the metrics: `(en, dl, dt, dr, seg_engaged)`,
# or None when none of them is set (the common case costs no tuple).
HitParams = tuple


def _param(query_params: Mapping[str, list[str]], name: str) -> str | None:
    """SPEC "parameter": the first value, when there is one and it is not ""."""
    values = query_params.get(name)
    if values:
        first = values[0]
        if first:
            return first
    return None


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

    `dl` and `dt` are only ever read from `page_view` hits, so other hits do
    not keep them; `seg` is kept as the one bit the metrics read of it."""
    if not query_params:
        return None
    en = _param(query_params, "en")
    if en == "page_view":
        dl = _param(query_params, "dl")
        dt = _param(query_params, "dt")
    else:
        dl = dt = None
    dr = _param(query_params, "dr")
    seg = seg_engages(_param(query_params, "seg"))
    if en is None and dr is None and not seg:
        return None
    if en is not None:
        en = sys.intern(en)  # few distinct names: share them in memory and pickles
    return (en, dl, dt, dr, seg)


def utm(url: str | None) -> dict[str, str]:
    """The UTM parameters of a URL's query, first value each, without the
    `utm_` prefix. A URL that `urlsplit` refuses (e.g. an unbalanced `[` in
    its host) has no readable query: `{}`."""
    if url is None:
        return {}
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {k: query["utm_" + k][0] for k in UTM_KEYS if "utm_" + k in query}


def session_metrics(first_t: int, last_t: int,
                    params: Iterable[HitParams | None]) -> dict[str, Any]:
    """The metrics of a session whose hits (in `hits` order) carry `params`;
    `first_t`/`last_t` are its start and end in microseconds."""
    events: dict[str, int] = {}
    entry = exit_page = title = referrer = None
    seg = False
    first = True
    for p in params:
        if p is None:
            events[NOT_SET] = events.get(NOT_SET, 0) + 1
            first = False
            continue
        en, dl, dt, dr, hit_seg = p
        if first:
            referrer = dr
            first = False
        name = en or NOT_SET
        events[name] = events.get(name, 0) + 1
        if en == "page_view":
            if events[name] == 1:
                entry, title = dl, dt
            exit_page = dl
        seg = seg or hit_seg
    page_views = events.get("page_view", 0)
    engaged = (seg or page_views >= 2 or events.get("screen_view", 0) >= 2
               or events.get("purchase", 0) >= 1)
    return {
        "duration_s": (last_t - first_t) / 1_000_000,
        "events": events,
        "page_views": page_views,
        "engaged": engaged,
        "entry_page": entry,
        "exit_page": exit_page,
        "entry_title": title,
        "referrer": referrer,
        "utm": utm(entry),
    }
