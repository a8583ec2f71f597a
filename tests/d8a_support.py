"""The d8a fixture (tests/d8a, a documented cut of shared/d8a) and the SPEC
form <-> d8a form conversion the tests share."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

D8A = Path(__file__).parent / "d8a"
HITS = D8A / "hits.jsonl"
QUEUE = D8A / "queue"
EVENTS = D8A / "d8a_worker_events.jsonl"
D8A_FLAGS = ["--input-format", "d8a", "--identity-rules", "d8a", "--session-duration", "2s"]

_TOP = {"id": "ID", "client_id": "ClientID", "property_id": "PropertyID",
        "authoritative_client_id": "AuthoritativeClientID", "user_id": "UserID",
        "metadata": "Metadata"}
_REQUEST = {"server_received_time": "ServerReceivedTime", "ip": "IP", "host": "Host",
            "method": "Method", "path": "Path", "body": "Body", "query_params": "QueryParams",
            "headers": "Headers"}


def d8a_sessions() -> set[frozenset[str]]:
    """d8a's own worker's sessions of the fixture, each as the set of its hits' ids."""
    groups: dict[str, set[str]] = defaultdict(set)
    for line in EVENTS.read_bytes().splitlines():
        row = orjson.loads(line)
        groups[row["session_id"]].add(row["id"])
    return {frozenset(g) for g in groups.values()}


def hit_id(hit: dict[str, Any]) -> str:
    return hit["ID"] if "ID" in hit else hit["id"]


def grouping(sessions: list[dict]) -> set[frozenset[str]]:
    """Sessions as sets of hit ids (the form `d8a_sessions` compares)."""
    return {frozenset(hit_id(h) for h in s["hits"]) for s in sessions}


def to_d8a(obj: dict[str, Any]) -> dict[str, Any]:
    """A SPEC-form hit in the d8a form: the table's fields under their Go
    names (the request's under `Request`), every other field as it was."""
    out: dict[str, Any] = {}
    request: dict[str, Any] = {}
    for name, value in obj.items():
        if name in _TOP:
            out[_TOP[name]] = value
        elif name in _REQUEST:
            request[_REQUEST[name]] = value
        else:
            out[name] = value
    out["Request"] = request
    return out


def line_to_d8a(raw: bytes) -> bytes:
    """`to_d8a` of a JSONL line that is a JSON object; any other line as it is."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return orjson.dumps(to_d8a(obj)) if isinstance(obj, dict) else raw
