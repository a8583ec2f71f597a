"""The d8a form against the SPEC form on the same hits, in one run.

Two sets of hits, each in both forms:
- `--hits-from generate`: the generator's hits (`protosessions generate`),
  and each of them as d8a publishes it (the SPEC "The d8a form" mapping: Go
  names, the request under `Request`, `EventName`, `AuthoritativeClientID`
  and the nulls as d8a writes them);
- `--hits-from fixture`: the 534 hits d8a v1.4.3 published (tests/d8a),
  and each of them in the SPEC form (its fields under the table's names;
  `EventName` left out, as the SPEC form carries the event name in `en`).
Rounds alternate the two forms, and the figures are the median of the
rounds (and their minimum, the least disturbed by other load), as CPU
microseconds per hit and as the ratio d8a / spec:

- parse: `parse_hit` of every line (validation, join key, metrics params);
- engine: the in-process `Engine` on every line (parse, identity, sessions,
  the hits written back with their ACID).

With `--identity-rules d8a` both forms use d8a's stamp (a SHA-256 a hit);
the ratio is still d8a form / SPEC form. A benchmark: it asserts nothing.

    nice python bench/d8a_form.py --hits 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
from dataclasses import replace

import orjson

import common  # noqa: F401  (puts the checkout on sys.path)
from protosessions import timefmt
from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.generate import generate_hits
from protosessions.hit import Hit, parse_hit

_TOP = {"id": "ID", "client_id": "ClientID", "property_id": "PropertyID",
        "authoritative_client_id": "AuthoritativeClientID", "user_id": "UserID",
        "metadata": "Metadata"}
_REQUEST = {"server_received_time": "ServerReceivedTime", "ip": "IP", "host": "Host",
            "method": "Method", "path": "Path", "body": "Body", "query_params": "QueryParams",
            "headers": "Headers"}


def as_d8a(raw: bytes) -> bytes:
    """A SPEC-form hit in the d8a form, key order and nulls as d8a writes them."""
    obj = orjson.loads(raw)
    qp = obj.get("query_params") or {}
    out = {"ID": obj["id"], "AuthoritativeClientID": obj.get("authoritative_client_id", obj["client_id"]),
           "ClientID": obj["client_id"], "EventName": (qp.get("en") or [""])[0],
           "PropertyID": obj["property_id"], "UserID": obj.get("user_id"),
           "Metadata": obj.get("metadata")}
    out["Request"] = {_REQUEST[k]: obj.get(k) for k in ("ip", "host", "server_received_time",
                                                        "query_params", "body", "path", "method",
                                                        "headers")}
    return orjson.dumps(out)


def parse_all(lines: list[bytes], s: Settings) -> int:
    return sum(1 for raw in lines if parse_hit(raw, s, None).__class__ is Hit)


def engine_all(lines: list[bytes], s: Settings) -> int:
    return len(Engine(s, future_check=False).run(lines))


def timed(fn, lines: list[bytes], s: Settings) -> tuple[float, int]:
    """CPU seconds of this process (not wall time: on a shared machine the
    wait for a core is not the code's cost), from a cold timestamp cache
    (`timefmt` remembers seconds: whichever form ran second would find it
    warm)."""
    gc.collect()
    timefmt._seconds.clear()
    t0 = time.process_time()
    out = fn(lines, s)
    return (time.process_time() - t0) / len(lines) * 1e6, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hits", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--identity-rules", default="classic", choices=("classic", "d8a"))
    ap.add_argument("--hits-from", default="generate", choices=("generate", "fixture"))
    args = ap.parse_args()
    gc.set_threshold(100_000, 50, 100)  # as the job runs (flows.sessions.tune_gc)

    if args.hits_from == "generate":
        spec = list(itertools.islice(generate_hits(args.hits, args.clients, 1), args.hits))
        d8a = [as_d8a(raw) for raw in spec]
        duration = "30m"
    else:
        from protosessions.d8a import spec_fields

        d8a = (common.ROOT / "tests" / "d8a" / "hits.jsonl").read_bytes().splitlines()
        spec = [orjson.dumps({k: v for k, v in spec_fields(orjson.loads(raw)).items()
                              if v is not None}) for raw in d8a]
        duration = "2s"
    base = Settings.from_strings(identity_rules=args.identity_rules, session_duration=duration)
    forms = {"spec": (spec, base), "d8a": (d8a, replace(base, input_format="d8a"))}
    size = {k: sum(map(len, v[0])) / len(v[0]) for k, v in forms.items()}
    print(f"{len(spec)} hits from {args.hits_from}, identity rules {args.identity_rules}; "
          f"bytes a hit: spec {size['spec']:.0f}, d8a {size['d8a']:.0f}")
    results: dict[tuple[str, str], list[float]] = {}
    checks: dict[tuple[str, str], int] = {}
    for r in range(args.rounds):
        for stage, fn in (("parse", parse_all), ("engine", engine_all)):
            order = ("spec", "d8a") if r % 2 == 0 else ("d8a", "spec")  # alternate who goes first
            for form in order:
                lines, s = forms[form]
                us, out = timed(fn, lines, s)
                results.setdefault((stage, form), []).append(us)
                checks[(stage, form)] = out
    for stage in ("parse", "engine"):
        a = statistics.median(results[(stage, "spec")])
        b = statistics.median(results[(stage, "d8a")])
        lo_a, lo_b = min(results[(stage, "spec")]), min(results[(stage, "d8a")])
        same = "same" if checks[(stage, "spec")] == checks[(stage, "d8a")] else "DIFFERENT"
        print(f"{stage:7} median: spec {a:7.2f} d8a {b:7.2f} us/hit, d8a/spec {b / a:4.2f}; "
              f"min: spec {lo_a:7.2f} d8a {lo_b:7.2f}, d8a/spec {lo_b / lo_a:4.2f} "
              f"({checks[(stage, 'spec')]} {'hits' if stage == 'parse' else 'sessions'}, {same})")


if __name__ == "__main__":
    main()
