"""Deterministic generator of realistic GA4-like ``/g/collect`` hits as JSONL.

For users (sample data), tests and benchmarks.  Depends only on :mod:`orjson`
and the standard library (no Bytewax).

    from protosessions.generate import generate_hits, write_hits
    with open("hits.jsonl", "wb") as f:
        write_hits(f, hits=1_000_000, clients=50_000, seed=1)

Model
-----
* ``clients`` devices (``client_id``, GA style ``"<31-bit random>.<first-visit
  epoch s>"``), each bound to one property (web site); traffic across the
  ``properties`` is skewed (weight ``1 / (k + 1) ** 1.5``).  About 20 % of
  clients send ``GET``, the rest ``POST``; half carry ``metadata``.
* Client activity is Zipf-like: the client of rank ``r`` gets a share
  proportional to ``1 / (r + 5)``.  With 1M hits / 50k clients the heaviest
  clients have ~10-20k hits each, the median client ~5.  With ``hits >= 5 *
  clients`` nearly every client appears.
* The stream covers about ``max(1 h, 10 min * hits / clients)`` of traffic.  A
  client's hits come in *visits* (bursts of hits a fraction of a second to a
  few minutes apart) separated by idle gaps that are sometimes shorter and
  sometimes longer than 30 minutes.  Heavy clients are bot-like: short
  intervals, short gaps.
* ``sid`` / ``sct`` follow GA4's client-side rule: a new ``sid`` (session start
  in epoch seconds) and the next ``sct`` when the client's previous hit is more
  than 30 minutes old.  A visit starts with a ``page_view``.
* ~10 % of clients sit behind shared NAT addresses (about 8 clients per
  address); ~25 % of the others are "mobile" and sometimes get a new address at
  the start of a visit; the rest keep their own address.
* ~5 % of clients are devices of logged-in users (2-3 devices per user).  In
  70 % of their visits the user logs in after 0-3 hits; from then on the
  visit's hits carry ``user_id`` (and the ``uid`` query param).
* ~1 % of hits are retried: the exact same bytes are emitted again 1-5 lines
  later, and never after a line more than 2 s (stream time) newer than the
  original, so a retry's time may be slightly earlier than the line before it.
  All other lines are in non-decreasing ``server_received_time`` order.
* ~0.5 % of hits carry a ``sessionStamp`` query param: an opaque string, the
  same for all hits of one (client, sid), of the form ``"<sid>.<8 hex>"``.
* Every hit carries ``dl`` (page URL) and ``dt`` (its title) of the page last
  viewed.  ~12 % of visits land on a campaign URL (``utm_source``,
  ``utm_medium``, ``utm_campaign``, sometimes ``utm_term`` / ``utm_content``,
  some values percent-encoded); ~40 % of the other visits come from a search
  engine, social network or link (``dr``).  ``dr`` is on every hit of the
  landing page, until the next ``page_view``.
* ``seg`` (GA4's "session engaged") is ``"0"`` until the GA session (``sid``)
  has lasted 10 s, seen a second ``page_view`` or a ``purchase``, then
  ``"1"``.  About 2 % of later events are ``screen_view`` and 0.4 %
  ``purchase``.
* ``id`` is 16 hex chars, unique per original hit: ``(counter + salt(seed)) *
  odd constant mod 2**64``.

Everything comes from one ``random.Random(seed)``: the same arguments give
byte-identical output.  Each line is byte-identical to ``orjson.dumps`` of the
hit dict: lines are assembled from fragments pre-serialized with
``orjson.dumps`` (several times faster than building and dumping a dict per
hit; ``write_hits`` does ~150-180k hits/s on one core).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import BinaryIO

import orjson

__all__ = ["generate_hits", "write_hits", "DEFAULT_START"]

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)

_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = 1_000_000
_SESSION_TIMEOUT_US = 30 * 60 * _US
_RETRY_WINDOW_US = 2 * _US
_MASK64 = (1 << 64) - 1
_ID_MULT = 0x9E3779B97F4A7C15  # odd -> multiplication is a bijection mod 2**64

_RETRY_RATE = 0.01
_STAMP_RATE = 0.005
_CAMPAIGN_SHARE = 0.12  # visits landing on a URL with UTM parameters
_REFERRED_SHARE = 0.4  # other visits that come with a referrer (dr)
_ENGAGED_AFTER_US = 10 * _US  # GA4: a session is engaged after 10 s
_GET_SHARE = 0.2  # share of clients sending GET (image/fetch fallback)
_NAT_SHARE = 0.10
_LOGGED_IN_SHARE = 0.05
_MOBILE_SHARE = 0.25
_MOBILE_IP_CHANGE = 0.35

_SITES = (
    "acme-store", "daily-news", "travelbook", "foodie-hub", "techreview",
    "gardenista", "autoparts", "bookcorner", "petplanet", "fitlife",
)

_PATHS = (
    "/", "/products", "/products/shoes", "/products/shirts", "/products/hats",
    "/products/bags", "/sale", "/new-arrivals", "/cart", "/checkout",
    "/checkout/payment", "/checkout/confirmation", "/account", "/account/orders",
    "/login", "/search?q=sneakers", "/search?q=red+dress", "/search?q=gift",
    "/blog", "/blog/how-to-choose", "/blog/spring-trends", "/blog/care-guide",
    "/about", "/contact", "/faq", "/shipping", "/returns", "/stores",
    "/products/item-1001", "/products/item-1002", "/products/item-1003",
    "/products/item-1004", "/products/item-1005", "/products/item-1006",
)

# (event name, weight) for non-first hits of a visit; a visit starts with page_view.
_EVENTS = (
    ("page_view", 0.36),
    ("user_engagement", 0.24),
    ("scroll", 0.18),
    ("click", 0.12),
    ("view_item", 0.06),
    ("add_to_cart", 0.03),
    ("begin_checkout", 0.01),
    ("screen_view", 0.02),
    ("purchase", 0.004),
)

# UTM query of a campaign landing page and the referrer (dr) such a visit has.
_CAMPAIGNS = (
    ("utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&utm_term=red+shoes",
     "https://www.google.com/"),
    ("utm_source=newsletter&utm_medium=email&utm_campaign=weekly%20digest&utm_content=header",
     None),
    ("utm_source=facebook&utm_medium=social&utm_campaign=summer%20sale%202025",
     "https://m.facebook.com/"),
    ("utm_source=instagram&utm_medium=social&utm_campaign=influencer&utm_content=story",
     "https://l.instagram.com/"),
    ("utm_source=bing&utm_medium=cpc&utm_campaign=brand&utm_term=acme", "https://www.bing.com/"),
    ("utm_source=partner.example&utm_medium=referral&utm_campaign=affiliate",
     "https://partner.example/deals"),
)

# (referrer, weight) of visits that come from another site without UTM tags.
_REFERRERS = (
    ("https://www.google.com/", 0.55),
    ("https://www.bing.com/", 0.08),
    ("https://duckduckgo.com/", 0.05),
    ("https://m.facebook.com/", 0.1),
    ("https://t.co/", 0.05),
    ("https://news.ycombinator.com/", 0.02),
    ("https://www.reddit.com/", 0.05),
    ("android-app://com.google.android.gm/", 0.1),
)

_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.6723.102 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
)

_LANGUAGES = (
    "en-US,en;q=0.9", "en-GB,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8",
    "fr-FR,fr;q=0.9,en;q=0.8", "es-ES,es;q=0.9", "it-IT,it;q=0.9,en;q=0.7",
    "nl-NL,nl;q=0.9,en;q=0.8", "pl-PL,pl;q=0.9", "pt-BR,pt;q=0.9,en;q=0.6",
    "ja-JP,ja;q=0.9",
)

_EDGE_POPS = ("FRA", "AMS", "LHR", "IAD", "SFO", "NRT", "GRU", "SYD")

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _cum(weights: list[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def _to_utc_us(start: datetime) -> int:
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    delta = start.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return delta // timedelta(microseconds=1)


def _title(path: str) -> str:
    """A page title for a path: "/products/item-1001" -> "Item 1001", "/" -> "Home"."""
    path, _, query = path.partition("?q=")
    if query:
        return "Search: " + query.replace("+", " ")
    last = path.rstrip("/").rpartition("/")[2]
    return last.replace("-", " ").capitalize() if last else "Home"


def _rand_ip(rng: random.Random) -> str:
    # Public-looking unicast IPv4 (first octet 11..223, not 127).
    a = rng.randint(11, 223)
    if a == 127:
        a = 128
    return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _validate(hits: int, clients: int, properties: int) -> None:
    if hits < 0:
        raise ValueError("hits must be >= 0")
    if clients < 1:
        raise ValueError("clients must be >= 1")
    if properties < 1:
        raise ValueError("properties must be >= 1")


def generate_hits(
    hits: int,
    clients: int,
    seed: int,
    start: datetime | None = None,
    properties: int = 3,
) -> Iterator[bytes]:
    """Yield `hits` JSON lines (bytes, no trailing newline) in non-decreasing
    server_received_time order (except retries, see module docstring)."""
    _validate(hits, clients, properties)
    lines = _generate_lines(
        hits, clients, seed, DEFAULT_START if start is None else start, properties
    )
    return map(str.encode, lines)


def _j(value: object) -> str:
    """JSON text of `value` exactly as orjson.dumps writes it."""
    return orjson.dumps(value).decode()


def _generate_lines(
    hits: int, n_clients: int, seed: int, start: datetime, n_props: int
) -> Iterator[str]:
    # Lines (ASCII str) are assembled from fragments pre-serialized with
    # orjson.dumps, so each line is byte-identical to orjson.dumps(<hit dict>)
    # (a test checks this) at a fraction of the cost of dumping a dict per hit.
    if hits == 0:
        return
    US = _US
    MASK64 = _MASK64
    ID_MULT = _ID_MULT
    SESSION_TIMEOUT_US = _SESSION_TIMEOUT_US
    RETRY_WINDOW_US = _RETRY_WINDOW_US
    STAMP_RATE = _STAMP_RATE
    NO_RETRY = 1.0 - _RETRY_RATE
    rng = random.Random(seed)
    rand = rng.random
    getrandbits = rng.getrandbits
    log = math.log
    heapreplace = heapq.heapreplace

    base_us = _to_utc_us(start)
    base_sec = base_us // _US
    span_us = int(max(3600.0, 600.0 * hits / n_clients) * _US)

    # ---- properties -------------------------------------------------------
    prop_ids: list[str] = []
    seen: set[str] = set()
    while len(prop_ids) < n_props:
        pid = "G-" + "".join(rng.choice(_ALNUM) for _ in range(10))
        if pid not in seen:
            seen.add(pid)
            prop_ids.append(pid)
    prop_cum = _cum([1.0 / (k + 1) ** 1.5 for k in range(n_props)])
    prop_hosts: list[str] = []
    # per property, per page: '<url json>],"dt":[<title json>],"sid":['
    prop_pages: list[list[str]] = []
    # per property, per page, per campaign: the same with UTM parameters on the URL
    prop_landings: list[list[list[str]]] = []
    for k in range(n_props):
        site = _SITES[k % len(_SITES)] + ("" if k < len(_SITES) else str(k // len(_SITES)))
        prop_hosts.append(f"metrics.{site}.com")
        site_name = site.replace("-", " ").title()
        pages, landings = [], []
        for p in _PATHS:
            url = f"https://www.{site}.com{p}"
            dt = '],"dt":[' + _j(f"{_title(p)} | {site_name}") + '],"sid":['
            pages.append(_j(url) + dt)
            sep = "&" if "?" in url else "?"
            landings.append([_j(url + sep + utm) + dt for utm, _ in _CAMPAIGNS])
        prop_pages.append(pages)
        prop_landings.append(landings)
    campaign_refs = ["" if ref is None else ',"dr":[' + _j(ref) + "]" for _, ref in _CAMPAIGNS]
    ref_pieces = [',"dr":[' + _j(ref) + "]" for ref, _ in _REFERRERS]
    ref_cum = _cum([w for _, w in _REFERRERS])
    ref_total = ref_cum[-1]
    n_campaigns = len(_CAMPAIGNS)
    CAMPAIGN_SHARE = _CAMPAIGN_SHARE
    REFERRED_SHARE = _REFERRED_SHARE
    ENGAGED_AFTER_US = _ENGAGED_AFTER_US
    page_cum = _cum([1.0 / (r + 1) for r in range(len(_PATHS))])
    page_total = page_cum[-1]
    last_page = len(_PATHS) - 1

    # per event: '<name json>],"dl":['
    ev_pieces = [_j(name) + '],"dl":[' for name, _ in _EVENTS]
    ev_cum = _cum([w for _, w in _EVENTS])
    ev_total = ev_cum[-1]
    page_view_piece = ev_pieces[0]
    purchase_piece = ev_pieces[[name for name, _ in _EVENTS].index("purchase")]
    seg_no, seg_yes = ',"seg":["0"]', ',"seg":["1"]'
    n_headers = len(_USER_AGENTS) * len(_LANGUAGES)

    # ---- clients: static attributes ---------------------------------------
    order = list(range(n_clients))
    rng.shuffle(order)  # rank of each client in the activity distribution
    norm = sum(1.0 / (r + 5) for r in range(n_clients))

    cids: list[str] = []
    c_prop: list[int] = []
    c_method: list[str] = []
    c_headers: list[dict[str, list[str]]] = []
    c_meta: list[dict[str, str] | None] = []
    c_ip: list[str] = []
    c_mobile: list[bool] = []
    c_user: list[str | None] = []
    c_visit_mean: list[float] = []  # mean extra hits per visit
    c_gap_mean: list[float] = []  # mean idle gap between visits (us)
    c_step_mean: list[float] = []  # mean interval inside a visit (us)
    firsts: list[int] = []

    used_cids: set[str] = set()
    for i in range(n_clients):
        expected = hits / norm / (order[i] + 5)  # expected hits of this client
        visit_mean = min(200.0, max(1.3, 0.9 * math.sqrt(expected)))
        cycle = span_us * visit_mean / expected  # mean time between visit starts
        step = min(30.0 * _US, 0.4 * cycle / visit_mean)
        gap = max(5.0 * _US, cycle - visit_mean * step)
        c_visit_mean.append(visit_mean - 1.0)
        c_step_mean.append(step)
        c_gap_mean.append(gap)
        first = int(rand() * cycle)
        firsts.append(first)

        p = bisect(prop_cum, rand() * prop_cum[-1])
        c_prop.append(p)
        # GA client id: random 31-bit number "." first-visit epoch seconds.
        if rand() < 0.4:  # new visitor: first seen at its first hit
            first_seen = base_sec + (first // _US)
        else:
            first_seen = max(1, base_sec - rng.randint(3600, 400 * 86400))
        while True:
            cid = f"{rng.randint(100000000, 2147483647)}.{first_seen}"
            if cid not in used_cids:
                used_cids.add(cid)
                break
        cids.append(cid)
        h = rng.randrange(n_headers)
        c_headers.append({
            "user-agent": [_USER_AGENTS[h // len(_LANGUAGES)]],
            "accept-language": [_LANGUAGES[h % len(_LANGUAGES)]],
        })
        c_method.append("GET" if rand() < _GET_SHARE else "POST")
        c_meta.append({"edge_pop": rng.choice(_EDGE_POPS)} if rand() < 0.5 else None)
        c_ip.append(_rand_ip(rng))
        c_mobile.append(False)
        c_user.append(None)

    # Shared NAT addresses: ~10 % of clients, ~8 clients per address.
    idx = list(range(n_clients))
    rng.shuffle(idx)
    n_nat = round(n_clients * _NAT_SHARE)
    if n_nat >= 2:
        nat_ips = [_rand_ip(rng) for _ in range(max(1, n_nat // 8))]
        nat_cum = _cum([1.0 / (k + 1) for k in range(len(nat_ips))])
        for j, i in enumerate(idx[:n_nat]):
            # the first len(nat_ips) clients cover every address once
            k = j if j < len(nat_ips) else bisect(nat_cum, rand() * nat_cum[-1])
            c_ip[i] = nat_ips[k]
    else:
        n_nat = 0
    # Logged-in users with 2-3 devices each: ~5 % of clients.
    n_logged = round(n_clients * _LOGGED_IN_SHARE)
    logged = idx[n_nat:n_nat + n_logged]
    j = 0
    while j + 1 < len(logged):
        devices = 3 if (rand() < 0.4 and j + 2 < len(logged)) else 2
        user = f"u{getrandbits(40):010x}"
        for i in logged[j:j + devices]:
            c_user[i] = user
        j += devices
    # Mobile clients: own address that changes now and then.
    for i in idx[n_nat + n_logged:]:
        if rand() < _MOBILE_SHARE:
            c_mobile[i] = True

    # ---- clients: pre-serialized fragments ----------------------------------
    # line = '{"id":"' ID A[i] TIME B[i] EVENT PAGE SESSION EXTRA TAIL
    def frag_b(i: int) -> str:
        p = c_prop[i]
        return (
            '","ip":' + _j(c_ip[i]) + ',"host":' + _j(prop_hosts[p])
            + ',"method":' + _j(c_method[i]) + ',"path":"/g/collect"'
            + ',"query_params":{"v":["2"],"tid":[' + _j(prop_ids[p])
            + '],"cid":[' + _j(cids[i]) + '],"en":['
        )

    f_a: list[str] = []
    f_b: list[str] = []
    f_tail: list[str] = []
    f_tail_user: list[str | None] = []
    f_uid: list[str | None] = []
    for i in range(n_clients):
        f_a.append(
            '","client_id":' + _j(cids[i]) + ',"property_id":' + _j(prop_ids[c_prop[i]])
            + ',"server_received_time":"'
        )
        f_b.append(frag_b(i))
        headers = "}," + '"headers":' + _j(c_headers[i])
        meta = "" if c_meta[i] is None else ',"metadata":' + _j(c_meta[i])
        f_tail.append(headers + meta + "}")
        user = c_user[i]
        if user is None:
            f_tail_user.append(None)
            f_uid.append(None)
        else:
            f_tail_user.append(headers + ',"user_id":' + _j(user) + meta + "}")
            f_uid.append(',"uid":[' + _j(user) + "]")

    # ---- per-client dynamic state -----------------------------------------
    s_left = [0] * n_clients  # hits left in the current visit (0: visit over)
    s_last = [-(1 << 62)] * n_clients  # time of previous hit (us, stream time)
    s_sess = [""] * n_clients  # '<sid>],"sct":[<sct>]'
    s_sct = [0] * n_clients
    s_stamp = [""] * n_clients  # ',"sessionStamp":[<stamp>]'
    s_page = [""] * n_clients
    s_ref = [""] * n_clients  # ',"dr":[<referrer>]' while on a referred landing page
    s_sid_start = [0] * n_clients  # time the GA session (sid) started
    s_seg = [""] * n_clients  # ',"seg":[...]': whether the GA session is engaged
    s_pv = [0] * n_clients  # page views in the GA session
    s_login = [0] * n_clients  # hits left before the user logs in (this visit)

    shift = n_clients.bit_length()
    mask = (1 << shift) - 1
    heap = [(firsts[i] << shift) | i for i in range(n_clients)]
    heapq.heapify(heap)
    del firsts

    # ids: (counter + salt) * odd constant mod 2**64, a bijection -> unique
    id_val = ((seed * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) * ID_MULT) & MASK64
    cached_sec = -1
    prefix = ""
    pending: list[tuple[int, int, str]] = []  # (due line index, time us, line)
    emitted = 0
    never = 1 << 30

    while emitted < hits:
        key = heap[0]
        t = key >> shift
        i = key & mask
        if pending:
            due_at = -1
            for k, (due, pt, _) in enumerate(pending):
                if due <= emitted or t - pt > RETRY_WINDOW_US:
                    due_at = k
                    break
            if due_at >= 0:
                yield pending.pop(due_at)[2]
                emitted += 1
                continue

        left = s_left[i]
        if left == 0:  # a new visit starts with a page_view
            left = 1 + int(-log(1.0 - rand()) * c_visit_mean[i])
            if c_mobile[i] and rand() < _MOBILE_IP_CHANGE:
                c_ip[i] = _rand_ip(rng)
                f_b[i] = frag_b(i)
            if f_uid[i] is not None:
                # 30 % of visits stay anonymous, others log in after 0-3 hits
                s_login[i] = never if rand() < 0.3 else int(rand() * 4) + 1
            ev = page_view_piece
            page = min(last_page, bisect(page_cum, rand() * page_total))
            u = rand()
            if u < CAMPAIGN_SHARE:
                c = min(n_campaigns - 1, int(u / CAMPAIGN_SHARE * n_campaigns))
                s_page[i] = prop_landings[c_prop[i]][page][c]
                s_ref[i] = campaign_refs[c]
            else:
                s_page[i] = prop_pages[c_prop[i]][page]
                s_ref[i] = (ref_pieces[bisect(ref_cum, rand() * ref_total)]
                            if rand() < REFERRED_SHARE else "")
        else:
            k = bisect(ev_cum, rand() * ev_total)
            ev = ev_pieces[k]
            if k == 0:
                s_page[i] = prop_pages[c_prop[i]][min(last_page, bisect(page_cum, rand() * page_total))]
                s_ref[i] = ""
        if t - s_last[i] > SESSION_TIMEOUT_US:  # GA4 client-side session timeout
            sid = _j(str((base_us + t) // US))
            sct = s_sct[i] + 1
            s_sct[i] = sct
            s_sess[i] = f'{sid}],"sct":["{sct}"]'
            s_stamp[i] = f',"sessionStamp":[{sid[:-1]}.{getrandbits(32):08x}"]'
            s_sid_start[i] = t
            s_pv[i] = 0
            s_seg[i] = seg_no
        if ev is page_view_piece:
            s_pv[i] += 1
        if s_pv[i] >= 2 or ev is purchase_piece or t - s_sid_start[i] >= ENGAGED_AFTER_US:
            s_seg[i] = seg_yes  # GA4: engaged for the rest of the session
        s_last[i] = t

        tail = f_tail[i]
        extra = ""
        uid = f_uid[i]
        if uid is not None:
            login = s_login[i]
            if login <= 1:
                extra = uid
                tail = f_tail_user[i]
            else:
                s_login[i] = login - 1
        r = rand()
        if r < STAMP_RATE:
            extra += s_stamp[i]

        abs_t = base_us + t
        sec = abs_t // US
        if sec != cached_sec:
            cached_sec = sec
            prefix = (_EPOCH_NAIVE + timedelta(seconds=sec)).isoformat()
        line = (
            f'{{"id":"{id_val:016x}{f_a[i]}{prefix}.'
            f"{abs_t - sec * US:06d}Z{f_b[i]}{ev}{s_page[i]}{s_sess[i]}{s_ref[i]}{s_seg[i]}"
            f"{extra}{tail}"
        )
        id_val = (id_val + ID_MULT) & MASK64
        yield line
        emitted += 1
        if r >= NO_RETRY:
            pending.append((emitted + 1 + int(rand() * 5), t, line))

        # -- schedule the client's next hit
        left -= 1
        s_left[i] = left
        if left:
            dt = 50_000 + int(-log(1.0 - rand()) * c_step_mean[i])
        else:
            dt = 1_000_000 + int(-log(1.0 - rand()) * c_gap_mean[i])
        heapreplace(heap, key + (dt << shift))


def write_hits(
    out: BinaryIO,
    hits: int,
    clients: int,
    seed: int,
    start: datetime | None = None,
    properties: int = 3,
) -> int:
    """Write lines with b"\\n" after each; return the number written."""
    _validate(hits, clients, properties)
    lines = _generate_lines(
        hits, clients, seed, DEFAULT_START if start is None else start, properties
    )
    write = out.write
    written = 0
    while True:
        chunk = list(islice(lines, 512))
        if not chunk:
            return written
        chunk.append("")
        write("\n".join(chunk).encode())
        written += len(chunk) - 1
