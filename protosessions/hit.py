"""The hit model and its validation (SPEC "Input: one hit" and "Rejection").

A valid hit keeps its raw bytes: the session output splices them back in
untouched (unknown fields, number spelling and key order included), so the
engine never re-serialises a hit it did not have to change.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import msgspec
import orjson

from . import d8a
from .config import Settings
from .session_metrics import NO_PARAMS, hit_params
from .timefmt import parse_time_us

REQUIRED = ("id", "client_id", "property_id", "server_received_time")
OPTIONAL_STR = ("ip", "host", "method", "path", "body")
OPTIONAL_MAPS = ("query_params", "headers")


class Hit(msgspec.Struct, array_like=True, eq=False, gc=False):
    """One valid hit. `acid` starts as the hit's own ACID and is rewritten by
    identity joining (`repoint`); `key` is `(property_id, acid)`, its
    proto-session. `order` is its place in the time merge of the
    partitions, `(M, partition, offset)` packed (`merge.merge_key`), and
    `clock` its `M`: the merge clock at which it is handled (SPEC rule 2),
    known where the hit is read.
    `params` is what the session metrics read of it (`session_metrics.hit_params`).

    A msgspec Struct: built in C, and a batch of hits crosses processes as
    one MessagePack value (`HitBatch`), not one pickled object a hit. It
    holds no other object that could hold it back, so the cyclic GC need
    not track it (`gc=False`)."""

    t: int
    clock: int
    id: str
    property_id: str
    client_id: str
    acid: str
    user_id: str | None
    join_key: str | None
    raw: bytes
    has_acid: bool  # the raw hit carries `authoritative_client_id`
    key: tuple[str, str]
    order: bytes = b""
    params: tuple[str, str | None, str | None, str | None, bool] = NO_PARAMS
    # 0: the SPEC form. 1: the d8a form (its ACID is written back as
    # `AuthoritativeClientID`). 2: the d8a form whose `AuthoritativeClientID`,
    # as a JSON reader reads it (the last of a repeated key), is its
    # `ClientID`, as d8a writes it: while its ACID is its ClientID, it is
    # written back as received.
    d8a_form: int = 0

    def repoint(self, acid: str) -> None:
        """Identity joining: the hit now belongs to `acid`; keeps `key` in step."""
        self.acid = acid
        self.key = (self.property_id, acid)


class HitBatch(list):
    """A shard's hits of one batch, as the keyed steps send them. Between
    processes Bytewax pickles every item: this list pickles as one
    MessagePack value of its hits (msgspec, in C), not a pickled object per
    hit. A batch holding an `Evict` (strategy `evict`) pickles as a list."""

    __slots__ = ("_packed",)

    def __reduce__(self):
        """Bytewax pickles an item that crosses processes twice (once to
        size it, once to send it): the value is packed once and kept. A
        batch is never changed once routed."""
        try:
            return (_unpack_hits, (self._packed,))
        except AttributeError:
            pass
        try:
            self._packed = _pack_hits(self)
        except Exception:  # never fail the exchange: what MessagePack cannot carry, pickle does
            return (HitBatch, (list(self),))
        return (_unpack_hits, (self._packed,))


_pack_hits = msgspec.msgpack.Encoder().encode
_decode_hits = msgspec.msgpack.Decoder(list[Hit]).decode


def _unpack_hits(blob: bytes) -> list[Hit]:
    """What a pickled `HitBatch` is rebuilt with (a function pickle can name)."""
    return _decode_hits(blob)


class Evict:
    """Strategy `evict`: move the open proto-session of `(property_id, acid)`
    into `owner`'s, by re-queueing its hits through the input."""

    __slots__ = ("property_id", "acid", "owner", "clock", "order")

    def __init__(self, property_id: str, acid: str, owner: str, clock: int,
                 order: bytes = b"") -> None:
        self.property_id = property_id
        self.acid = acid
        self.owner = owner
        self.clock = clock
        self.order = order  # the merge key of the hit that caused it: handled just before it

    def __reduce__(self):
        return (Evict, (self.property_id, self.acid, self.owner, self.clock, self.order))

    def __repr__(self) -> str:
        return f"Evict({self.property_id!r}, {self.acid!r} -> {self.owner!r})"


def source_dict(loc: tuple) -> dict[str, Any]:
    """Where a dead letter came from: `(file, line)` or `(topic, partition, offset)`."""
    if len(loc) == 2:
        return {"file": loc[0], "line": loc[1]}
    return {"topic": loc[0], "partition": loc[1], "offset": loc[2]}


class DeadLetter:
    """A rejected input with the first failing check (`reason`) and where it came from."""

    __slots__ = ("reason", "raw", "source")

    def __init__(self, reason: str, raw: bytes, source: dict[str, Any]) -> None:
        self.reason = reason
        self.raw = raw
        self.source = source

    def __reduce__(self):
        return (DeadLetter, (self.reason, self.raw, self.source))

    def __repr__(self) -> str:
        return f"DeadLetter({self.reason!r}, {self.source!r})"

    def to_json(self) -> bytes:
        try:
            raw, encoding = self.raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(self.raw).decode("ascii"), "base64"
        return orjson.dumps({"error": self.reason, "raw": raw,
                             "raw_encoding": encoding, "source": self.source})


def _is_str_lists(value: Any) -> bool:
    if value.__class__ is not dict:
        return False
    for k, v in value.items():
        if v.__class__ is not list:
            return False
        for s in v:
            if s.__class__ is not str:
                return False
    return True


def _is_str_map(value: Any) -> bool:
    if value.__class__ is not dict:
        return False
    for v in value.values():
        if v.__class__ is not str:
            return False
    return True


def session_stamp(obj: dict[str, Any]) -> str | None:
    """First non-empty `sessionStamp` query parameter, else the IP, else None."""
    return _stamp(obj.get("query_params"), obj.get("ip"))


def _stamp(query_params: dict[str, list[str]] | None, ip: str | None) -> str | None:
    if query_params:
        values = query_params.get("sessionStamp")
        if values and values[0]:
            return values[0]
    return ip or None


def _json_object(raw: bytes, settings: Settings) -> dict | str:
    """SPEC rule 0's first checks, shared by both forms of a hit: the
    parsed JSON object, or why it is not one (size first)."""
    if len(raw) > settings.max_hit_bytes:
        return "too_large"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not_json"
    if obj.__class__ is not dict:
        return "not_json" if _has_huge_int(raw) else "not_object"
    return obj


def check(raw: bytes, settings: Settings, wall_now_us: int | None) -> tuple[dict, int] | str:
    """Validate one raw hit: `(parsed object, t)` or the SPEC rejection reason.

    `wall_now_us` None skips the future check (used where no wall clock applies).
    The common, valid hit takes one pass with no ordering work; any doubt
    falls back to `_first_failure`, which checks in SPEC order.
    """
    obj = _json_object(raw, settings)
    if obj.__class__ is str:
        return obj
    if not _KNOWN.issuperset(obj) and _floats_in_unknown(obj) and _has_huge_int(raw):
        return "not_json"
    get = obj.get
    ts = get("server_received_time")
    if not (_nonempty_str(get("id")) and _nonempty_str(get("client_id"))
            and _nonempty_str(get("property_id")) and _nonempty_str(ts)):
        return _first_failure(obj, raw)
    t = parse_time_us(ts)
    if t is None:
        return "bad_timestamp"
    for name in OPTIONAL_STR:
        v = get(name)
        if v is not None and v.__class__ is not str:
            return _first_failure(obj, raw)
    for name in OPTIONAL_MAPS:
        v = get(name)
        if v is not None and not _is_str_lists(v):
            return _first_failure(obj, raw)
    v = get("metadata")
    if v is not None and not _is_str_map(v):
        return _first_failure(obj, raw)
    v = get("user_id")
    if v is not None and v.__class__ is not str:
        return _first_failure(obj, raw)
    if "authoritative_client_id" in obj:
        v = obj["authoritative_client_id"]
        if v is not None and (v.__class__ is not str or v == ""):
            return _first_failure(obj, raw)
    if wall_now_us is not None and t - wall_now_us > settings.max_future_skew_us:
        return "future_timestamp"
    return obj, t


_KNOWN = frozenset(REQUIRED + OPTIONAL_STR + OPTIONAL_MAPS
                   + ("authoritative_client_id", "user_id", "metadata"))
_DIGITS = bytes(48 if 48 <= i <= 57 else 46 for i in range(256))  # digits -> "0", rest -> "."
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _floats_in_unknown(obj: dict[str, Any]) -> bool:
    """Whether a field outside the SPEC table holds a float anywhere: the only
    place a valid-looking hit can hide an integer orjson widened to a float."""
    return any(_has_float(v) for k, v in obj.items() if k not in _KNOWN)


def _has_float(v: Any) -> bool:
    """Iterative: an unknown field may nest up to orjson's 1024 levels, deeper
    than Python's recursion limit."""
    stack = [v]
    pop, extend = stack.pop, stack.extend
    while stack:
        c = (x := pop()).__class__
        if c is float:
            return True
        if c is dict:
            extend(x.values())
        elif c is list:
            extend(x)
    return False


# In text orjson has accepted: a string (skipped), or a number with its
# fraction/exponent if any. An integer is the latter with no `.`/`e`.
_STRING_OR_NUMBER = re.compile(rb'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:[.eE][-+0-9.eE]*)?')


def _has_huge_int(raw: bytes) -> bool:
    """orjson reads integers past 64 bits as floats instead of refusing them
    (SPEC: integers within 64 bits). Only for the rare hit that may hold one:
    a run of 19 digits, then a scan of its number tokens (no recursion, so
    any depth orjson accepts is fine)."""
    if raw.translate(_DIGITS).find(b"0" * 19) < 0:
        return False
    for m in _STRING_OR_NUMBER.finditer(raw):
        token = m.group()
        if len(token) >= 19 and token[0] != 34 and token.lstrip(b"-").isdigit():  # 34: '"'
            if not _INT_MIN <= int(token) <= _INT_MAX:
                return True
    return False


def _nonempty_str(v: Any) -> bool:
    return v.__class__ is str and v != ""


def _first_failure(obj: dict[str, Any], raw: bytes) -> str | None:
    """The first failing SPEC check (steps 2, 4-6) of a parsed object, or None."""
    if _has_huge_int(raw):
        return "not_json"
    for name in REQUIRED:
        v = obj.get(name)
        if v is None or v == "":
            return "missing_field:" + name
        if v.__class__ is not str:
            return "bad_type:" + name
    if parse_time_us(obj["server_received_time"]) is None:
        return "bad_timestamp"
    if "authoritative_client_id" in obj:
        v = obj["authoritative_client_id"]
        if v is not None and (v.__class__ is not str or v == ""):
            return "bad_type:authoritative_client_id"
    for name in OPTIONAL_STR:
        v = obj.get(name)
        if v is not None and v.__class__ is not str:
            return "bad_type:" + name
    v = obj.get("user_id")
    if v is not None and v.__class__ is not str:
        return "bad_type:user_id"
    for name in OPTIONAL_MAPS:
        v = obj.get(name)
        if v is not None and not _is_str_lists(v):
            return "bad_type:" + name
    v = obj.get("metadata")
    if v is not None and not _is_str_map(v):
        return "bad_type:metadata"
    return None


def join_key(obj: dict[str, Any], settings: Settings, t: int = 0) -> str | None:
    """SPEC rule 1 for a parsed hit under the SPEC table's names (see
    `_join_key`; under identity rules `d8a`, `_d8a_join_key` of `t`)."""
    if settings.identity_rules == "d8a":
        return _d8a_join_key(obj["property_id"], t, obj.get("ip"), obj.get("query_params"),
                             obj.get("headers"), settings)
    return _join_key(obj.get("user_id"), obj.get("query_params"), obj.get("ip"), settings)


def _d8a_join_key(property_id: str, t: int, ip: str | None,
                  query_params: dict[str, list[str]] | None,
                  headers: dict[str, list[str]] | None, settings: Settings) -> str | None:
    """Identity rules `d8a`: a hit's `join_key` is its d8a session stamp (when
    joining by stamp); its user ID, its other key, is `Hit.user_id`."""
    if not settings.join_by_session_stamp:
        return None
    return "s:" + d8a.stamp(property_id, t, ip, query_params, headers)


def _join_key(user_id: str | None, query_params: dict[str, list[str]] | None, ip: str | None,
              settings: Settings) -> str | None:
    """SPEC rule 1: user ID if joining by it and present, else the session stamp
    if joining by it, else None. Prefixed so a user ID never meets a stamp."""
    if user_id and settings.join_by_user_id:
        return "u:" + user_id
    if settings.join_by_session_stamp:
        stamp = _stamp(query_params, ip)
        if stamp:
            return "s:" + stamp
    return None


class _Known(msgspec.Struct, forbid_unknown_fields=True):
    """The SPEC table's fields with the types of a valid hit, for the typed
    fast path of `parse_hit`. An unknown field, or any value of another
    type, makes msgspec refuse the hit, which then takes `check`."""

    id: str | None = None
    client_id: str | None = None
    property_id: str | None = None
    server_received_time: str | None = None
    authoritative_client_id: str | None | msgspec.UnsetType = msgspec.UNSET
    ip: str | None = None
    host: str | None = None
    method: str | None = None
    path: str | None = None
    body: str | None = None
    user_id: str | None = None
    query_params: dict[str, list[str]] | None = None
    headers: dict[str, list[str]] | None = None
    metadata: dict[str, str] | None = None


_decode_known = msgspec.json.Decoder(_Known).decode
_UNSET = msgspec.UNSET


def parse_hit(raw: bytes, settings: Settings, wall_now_us: int | None,
              clock: int = 0) -> Hit | str:
    """Raw bytes -> `Hit`, or the rejection reason. `clock` is stamped on the hit
    (callers pass the running worker clock including this hit).

    The common hit (only the SPEC table's fields, each of its type) is decoded
    and type-checked in one C pass by msgspec. It accepts a document only
    where orjson does too: strict UTF-8 and escapes, and with no unknown
    field there is no number and no nesting past 3 levels, so none of
    orjson's further limits can apply. Anything msgspec refuses, and any
    doubt left (empty required fields, an empty `authoritative_client_id`),
    takes `check`, which finds the first failing SPEC check as before.
    A hit in the d8a form (`settings.input_format`) takes `parse_d8a_hit`."""
    if settings.input_format != "spec":
        return parse_d8a_hit(raw, settings, wall_now_us, clock)
    if len(raw) <= settings.max_hit_bytes:
        try:
            k = _decode_known(raw)
        except Exception:  # msgspec refuses it (or its UTF-8): `check` says why
            pass
        else:
            cid = k.client_id
            ts = k.server_received_time
            aci = k.authoritative_client_id
            if k.id and cid and k.property_id and ts and aci != "":
                t = parse_time_us(ts)
                if t is None:
                    return "bad_timestamp"
                if wall_now_us is not None and t - wall_now_us > settings.max_future_skew_us:
                    return "future_timestamp"
                uid = k.user_id or None
                qp = k.query_params
                acid = aci or cid
                pid = k.property_id
                jk = (_join_key(uid, qp, k.ip, settings) if settings.identity_rules == "classic"
                      else _d8a_join_key(pid, t, k.ip, qp, k.headers, settings))
                return Hit(t, clock if clock > t else t, k.id, pid, cid, acid, uid,
                           jk, raw, aci is not _UNSET, (pid, acid), params=hit_params(qp))
    return _parse_checked(raw, settings, wall_now_us, clock)


def _parse_checked(raw: bytes, settings: Settings, wall_now_us: int | None,
                   clock: int = 0) -> Hit | str:
    """`parse_hit` through `check` (orjson and the ordered SPEC checks)."""
    res = check(raw, settings, wall_now_us)
    if res.__class__ is str:
        return res  # type: ignore[return-value]
    obj, t = res  # type: ignore[misc]
    cid = obj["client_id"]
    acid = obj.get("authoritative_client_id") or cid
    pid = obj["property_id"]
    return Hit(t, max(clock, t), obj["id"], pid, cid, acid, obj.get("user_id") or None,
               join_key(obj, settings, t), raw, "authoritative_client_id" in obj, (pid, acid),
               params=hit_params(obj.get("query_params")))


class _D8aRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`Request` of the d8a form with the types of a valid hit (`_D8aKnown`)."""

    IP: str | None = None
    Host: str | None = None
    ServerReceivedTime: str | None = None
    QueryParams: dict[str, list[str]] | None = None
    Body: str | None = None
    Path: str | None = None
    Method: str | None = None
    Headers: dict[str, list[str]] | None = None


class _D8aKnown(msgspec.Struct, forbid_unknown_fields=True):
    """The d8a form's fields with the types of a valid hit, for the typed fast
    path of `parse_d8a_hit` (as `_Known` is for the SPEC form). `EventName`
    passes through untouched; typed as text here so that no number can hide
    in a hit this path accepts (any other value takes `check_d8a`)."""

    ID: str | None = None
    AuthoritativeClientID: str | None | msgspec.UnsetType = msgspec.UNSET
    ClientID: str | None = None
    EventName: str | None = None
    PropertyID: str | None = None
    UserID: str | None = None
    Metadata: dict[str, str] | None = None
    Request: _D8aRequest | None = None


_decode_d8a = msgspec.json.Decoder(_D8aKnown).decode


def parse_d8a_hit(raw: bytes, settings: Settings, wall_now_us: int | None,
                  clock: int = 0) -> Hit | str:
    """`parse_hit` for a hit in the d8a form (SPEC "The d8a form"): the
    common hit in one typed msgspec pass, anything else through
    `check_d8a`, which checks in SPEC order under the table's names."""
    if len(raw) <= settings.max_hit_bytes:
        try:
            k = _decode_d8a(raw)
        except Exception:  # msgspec refuses it: `check_d8a` says why
            pass
        else:
            r = k.Request
            cid = k.ClientID
            pid = k.PropertyID
            if k.ID and cid and pid and r is not None and r.ServerReceivedTime:
                t = parse_time_us(r.ServerReceivedTime)
                if t is None:
                    return "bad_timestamp"
                if wall_now_us is not None and t - wall_now_us > settings.max_future_skew_us:
                    return "future_timestamp"
                aci = k.AuthoritativeClientID
                uid = k.UserID or None
                qp = r.QueryParams
                acid = aci or cid  # "" and null: not set (UNSET is falsy too)
                jk = (_join_key(uid, qp, r.IP, settings) if settings.identity_rules == "classic"
                      else _d8a_join_key(pid, t, r.IP, qp, r.Headers, settings))
                form = 2 if aci == cid else 1
                return Hit(t, clock if clock > t else t, k.ID, pid, cid, acid, uid, jk, raw,
                           aci is not _UNSET, (pid, acid), params=hit_params(qp), d8a_form=form)
    res = check_d8a(raw, settings, wall_now_us)
    if res.__class__ is str:
        return res  # type: ignore[return-value]
    obj, fields, t = res  # type: ignore[misc]
    cid = fields["client_id"]
    acid = fields.get("authoritative_client_id") or cid
    pid = fields["property_id"]
    form = 2 if obj.get(d8a.ACID_FIELD) == cid else 1
    return Hit(t, max(clock, t), fields["id"], pid, cid, acid, fields["user_id"] or None,
               join_key(fields, settings, t), raw, d8a.ACID_FIELD in obj, (pid, acid),
               params=hit_params(fields["query_params"]), d8a_form=form)


def check_d8a(raw: bytes, settings: Settings, wall_now_us: int | None
              ) -> tuple[dict, dict, int] | str:
    """Validate one raw hit in the d8a form: `(parsed object, its fields
    under the SPEC table's names, t)` or the SPEC rejection reason, the
    table's checks in the table's order (`d8a.spec_fields`)."""
    obj = _json_object(raw, settings)
    if obj.__class__ is str:
        return obj
    fields = d8a.spec_fields(obj)
    reason = _first_failure(fields, raw)
    if reason is not None:
        return reason
    t = parse_time_us(fields["server_received_time"])
    if t is None:  # not reached: `_first_failure` checked it
        return "bad_timestamp"
    if wall_now_us is not None and t - wall_now_us > settings.max_future_skew_us:
        return "future_timestamp"
    return obj, fields, t
