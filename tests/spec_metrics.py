"""The SPEC's "Session metrics", read literally from a session record's hits:
an oracle written apart from `protosessions.session_metrics`, which keeps
them incrementally."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit


def param(hit: dict, name: str) -> str | None:
    values = (hit.get("query_params") or {}).get(name)
    return values[0] if values and values[0] else None


def is_nonzero_integer(text: str | None) -> bool:
    return text is not None and re.fullmatch(r"[+-]?[0-9]+", text) is not None and int(text) != 0


def spec_metrics(hits: list[dict], start: str, end: str) -> dict[str, Any]:
    """`hits` in the record's order; `start`/`end` as the record writes them."""
    events: dict[str, int] = {}
    for h in hits:
        name = param(h, "en") or "(not set)"
        events[name] = events.get(name, 0) + 1
    ens = [param(h, "en") for h in hits]
    views = [h for h, en in zip(hits, ens) if en == "page_view"]
    entry = param(views[0], "dl") if views else None
    utm: dict[str, str] = {}
    if entry is not None:
        try:
            query = parse_qs(urlsplit(entry).query)
        except ValueError:
            query = {}
        utm = {k: query["utm_" + k][0]
               for k in ("source", "medium", "campaign", "term", "content") if "utm_" + k in query}
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return {
        "duration_s": round(seconds, 6),
        "events": events,
        "page_views": len(views),
        "engaged": (any(is_nonzero_integer(param(h, "seg")) for h in hits) or len(views) >= 2
                    or ens.count("screen_view") >= 2 or ens.count("purchase") >= 1),
        "entry_page": entry,
        "exit_page": param(views[-1], "dl") if views else None,
        "entry_title": param(views[0], "dt") if views else None,
        "referrer": param(hits[0], "dr") if hits else None,
        "utm": utm,
    }
