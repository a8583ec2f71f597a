"""d8a's own hit form and identity stamp (SPEC "The d8a form", rule 1's
identity rules `d8a`).

d8a (v1.4) publishes a hit as Go's `encoding/json` writes its `hits.Hit`:
Go field names, the request's fields nested under `Request`. This module
maps that form onto the SPEC table's names (so validation, reasons and
their order are the table's), writes a session's hits back in that form
with `AuthoritativeClientID` set, and computes d8a's session stamp. The
typed fast path that reads the common d8a hit lives with the other parse
path, in `protosessions.hit`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import orjson

from .session import _top_level_values

ACID_FIELD = "AuthoritativeClientID"
# The SPEC table's name of each d8a field: top-level fields, then `Request`'s.
TOP_LEVEL = {"ID": "id", "ClientID": "client_id", "PropertyID": "property_id",
             "UserID": "user_id", "Metadata": "metadata"}
REQUEST = {"ServerReceivedTime": "server_received_time", "IP": "ip", "Host": "host",
           "Method": "method", "Path": "path", "Body": "body", "QueryParams": "query_params",
           "Headers": "headers"}
# The headers of d8a's stamp, in its order (SPEC rule 1, identity rules `d8a`).
STAMP_HEADERS = ("Accept", "Accept-Encoding", "Accept-Language", "User-Agent", "Sec-CH-UA",
                 "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform", "Sec-CH-UA-Platform-Version",
                 "Sec-CH-UA-Model", "Sec-CH-UA-Full-Version")
_STAMP_LOWER = tuple(h.lower() for h in STAMP_HEADERS)
_EMPTY: dict = {}


def spec_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A parsed d8a hit under the SPEC table's names (what `hit._first_failure`
    checks). `Request` that is not an object counts as absent (its fields are
    missing); `AuthoritativeClientID` counts only when non-empty; a field
    absent here is `None`, which the table reads as absent."""
    req = obj.get("Request")
    if req.__class__ is not dict:
        req = _EMPTY
    get = req.get
    out = {"id": obj.get("ID"), "client_id": obj.get("ClientID"),
           "property_id": obj.get("PropertyID"),
           "server_received_time": get("ServerReceivedTime")}
    aci = obj.get(ACID_FIELD)
    if aci is not None and aci != "":
        out["authoritative_client_id"] = aci
    out.update(ip=get("IP"), host=get("Host"), method=get("Method"), path=get("Path"),
               body=get("Body"), user_id=obj.get("UserID"), query_params=get("QueryParams"),
               headers=get("Headers"), metadata=obj.get("Metadata"))
    return out


def stamp(property_id: str, t: int, ip: str | None,
          query_params: dict[str, list[str]] | None,
          headers: dict[str, list[str]] | None) -> str:
    """d8a v1.4's session stamp: SHA-256 (hex) of `fss=<v>|<property>` when
    query parameter `fss` has a non-empty first value; else of the first
    values of `STAMP_HEADERS` (names case-insensitive; where two names differ
    only in case, the first in the hit wins), `|`-joined, then
    `|<ip>|<property>|<UTC date of t>`."""
    if query_params:
        fss = query_params.get("fss")
        if fss and fss[0]:
            return _sha(f"fss={fss[0]}|{property_id}")
    values = _header_values(headers) if headers else ("",) * len(STAMP_HEADERS)
    return _sha("|".join(values) + f"|{ip or ''}|{property_id}|{utc_date(t)}")


def _header_values(headers: dict[str, list[str]]) -> tuple[str, ...]:
    """The first value of each stamp header (`""` when absent or empty)."""
    lower: dict[str, list[str]] = {}
    for name, values in headers.items():
        lower.setdefault(name.lower(), values)
    out = []
    for name in _STAMP_LOWER:
        values = lower.get(name)
        out.append(values[0] if values else "")
    return tuple(out)


def _sha(text: str) -> str:
    # surrogatepass: never raise on a lone surrogate (a parser that let one through)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_DAY_US = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)


def utc_date(t: int) -> str:
    """`YYYY-MM-DD` of Unix microseconds `t` in UTC."""
    return _day(t // _DAY_US)


@lru_cache(maxsize=1024)
def _day(n: int) -> str:
    return (_EPOCH_DAY + timedelta(days=n)).isoformat()


_KEY = b'"AuthoritativeClientID"'
_VALUE = re.compile(rb'"AuthoritativeClientID"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null)')
# `\u0041`..`\u007f`: the only escapes that spell a letter of the key; without
# one anywhere, the top-level key can only be spelled plainly.
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7][0-9a-fA-F]")


def with_acid(raw: bytes, acid: str, has_field: bool) -> bytes:
    """The raw d8a hit with top-level `AuthoritativeClientID` set to `acid`,
    every other byte as received (SPEC: a session's hits hold such hits as
    received). d8a always writes the field: where its spelling is plain and
    unique its value is replaced by a regex; otherwise the top-level object
    is scanned, so nested objects are never touched."""
    value = orjson.dumps(acid)
    if not has_field:
        return raw.rstrip()[:-1] + b',"AuthoritativeClientID":' + value + b"}"
    if raw.count(_KEY) == 1 and _ESCAPED_LETTER.search(raw) is None:
        out, n = _VALUE.subn(lambda _: _KEY + b":" + value, raw, count=1)
        if n:
            return out
    pieces, last = [], 0
    for start, end in _top_level_values(raw, ACID_FIELD):
        pieces += (raw[last:start], value)
        last = end
    pieces.append(raw[last:])
    return b"".join(pieces)
