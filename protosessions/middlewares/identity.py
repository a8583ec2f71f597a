"""Identity joining (SPEC rule 1): session stamps and user IDs, property-isolated.

Runs in its own step, keyed by join key, before the session step: it only
rewrites a hit's ACID; the hit then travels to the shard of its new ACID.
"""

from __future__ import annotations

import pickle

from ..config import Settings
from ..hit import Evict, Hit
from ..middleware import BaseMiddleware, Context, Next
from ..store import ShardStore, resume_at
from ..wheel import TimingWheel

SNAPSHOT_VERSION = 2  # 2: records whether key ownership is tracked (evict)

ClaimKey = tuple  # (property_id, join key)


class Claim:
    """Who owns a join key, and when a hit with that key was last seen."""

    __slots__ = ("owner", "last", "bucket", "sid")

    def __init__(self, owner: str, last: int, bucket: int = -1, sid: int = 0) -> None:
        self.owner = owner
        self.last = last
        self.bucket = bucket
        self.sid = sid  # its id in the shard's state store (0: not written yet)


class ClaimTable:
    """The live claims of one identity shard; lapsed claims are purged by the wheel.

    `owned` (kept only for strategy `evict`) lists the join keys each ACID owns,
    so they can move with its proto-session.

    With a state store (`track`), a snapshot writes only the claims changed
    since the last one (`dirty`: every claim a hit touched) and the ids of
    those forgotten (`gone`), as the session shards do: the claims of every
    client seen in a session duration are not rewritten every epoch.
    """

    __slots__ = ("claims", "wheel", "clock", "owned", "dirty", "gone", "next_sid")

    def __init__(self, track: bool = False) -> None:
        self.claims: dict[ClaimKey, Claim] = {}
        self.wheel = TimingWheel()
        self.clock = 0
        self.owned: dict[tuple, set] = {}
        self.dirty: set[ClaimKey] | None = set() if track else None
        self.gone: list[int] = []
        self.next_sid = 1

    def new(self, key: ClaimKey, owner: str, t: int, old: Claim | None) -> Claim:
        """A fresh claim of `key`, replacing the lapsed `old` one if any (it
        keeps its store id: the key's row is rewritten, not doubled)."""
        claim = self.claims[key] = Claim(owner, t, -1, old.sid if old is not None else 0)
        return claim

    def forget(self, key: ClaimKey, claim: Claim) -> None:
        del self.claims[key]
        if claim.sid and self.dirty is not None:
            self.gone.append(claim.sid)

    def expire(self, key: ClaimKey, claim: Claim, bucket: int) -> None:
        """`claim` lapses in wheel bucket `bucket` (which only grows). Filed in
        the wheel once, when new; `IdentityJoin.on_ping` files it again if it
        moved on: one entry a claim, not one a hit, for a session duration."""
        if claim.bucket < 0:
            self.wheel.schedule(key, bucket)
        claim.bucket = bucket
        if self.dirty is not None:
            self.dirty.add(key)

    def own(self, key: ClaimKey, owner: str) -> None:
        self.owned.setdefault((key[0], owner), set()).add(key)

    def disown(self, key: ClaimKey, owner: str) -> None:
        keys = self.owned.get((key[0], owner))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.owned[(key[0], owner)]

    def snapshot(self, store: ShardStore | None = None) -> tuple:
        """`(version, clock, claims, owned?)`; with a store, the changes go
        there and the snapshot is `(version, clock, "store", marker, next
        store id, owned?)`."""
        if store is None:
            return (SNAPSHOT_VERSION, self.clock,
                    tuple((k, c.owner, c.last, c.bucket) for k, c in self.claims.items()),
                    bool(self.owned))
        assert self.dirty is not None
        changes = []
        claims = self.claims
        for key in self.dirty:
            c = claims.get(key)
            if c is None:
                continue  # forgotten since: in `gone` if it was written
            if not c.sid:
                c.sid = self.next_sid
                self.next_sid += 1
            changes.append((c.sid, pickle.dumps((key, c.owner, c.last, c.bucket), protocol=5), []))
        marker = store.write(changes, self.gone)
        self.dirty.clear()
        self.gone = []
        return (SNAPSHOT_VERSION, self.clock, "store", tuple(marker), self.next_sid,
                bool(self.owned))

    @classmethod
    def restore(cls, snap: tuple, store: ShardStore | None = None,
                track: bool = False) -> "ClaimTable":
        """The table a snapshot names; a store snapshot needs its `store`,
        which is rolled back to exactly the snapshot's position."""
        if not isinstance(snap, tuple) or not snap or snap[0] != SNAPSHOT_VERSION:
            raise ValueError(f"identity snapshot format {snap[0] if snap else snap!r} "
                             f"is not {SNAPSHOT_VERSION}: this build cannot resume it")
        table = cls(track or store is not None)
        table.clock = snap[1]
        if snap[2] == "store":
            store = resume_at(store, snap[3], "identity snapshot's claims")
            table.next_sid = snap[4]
            rows = []
            for sid, blob, _ in store.load():
                key, owner, last, bucket = pickle.loads(blob)
                rows.append((key, owner, last, bucket, sid))
        else:
            rows = [(*row, 0) for row in snap[2]]  # none stored yet: all written at the next snapshot
            if store is not None:
                store.rollback(None)  # what it holds belongs to no resumable epoch
        for key, owner, last, bucket, sid in rows:
            table.claims[key] = Claim(owner, last, bucket, sid)
            table.wheel.schedule(key, bucket)
            if not sid and table.dirty is not None:
                table.dirty.add(key)
        for key, owner, _, _, _ in rows if snap[-1] else ():
            table.own(key, owner)
        return table


class IdentityJoin(BaseMiddleware):
    """A hit whose join key is owned takes the owner's ACID (strategy `rewrite`).

    The first hit that carries a join key claims it for its ACID. The claim
    lapses once no hit with the key came for `session_duration`: for a hit at
    `t` read at clock `c`, when `t - last >= session_duration`, or when
    `c - allowed_lateness >= last + session_duration` (the clock already
    closed every proto-session that hit could have joined).

    Strategy `evict` (the original evicter) also moves the hit's own client
    into the owner: every join key its ACID owned now belongs to the owner
    (so later hits never bounce back), and an `Evict` is emitted ahead of the
    hit, for the session step to re-queue that client's open proto-session.
    """

    def __init__(self, settings: Settings, table: ClaimTable) -> None:
        self.duration = settings.session_duration_us
        self.lateness = settings.allowed_lateness_us
        self.tick = settings.tick_us
        self.evict = settings.eviction_strategy == "evict"
        self.table = table

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        jk = hit.join_key
        if jk is not None:
            key = (hit.property_id, jk)
            table = self.table
            claim = table.claims.get(key)
            if claim is not None and not (
                hit.t - claim.last >= self.duration
                or hit.clock - self.lateness >= claim.last + self.duration
            ):
                if self.evict and claim.owner != hit.acid:
                    self._move(ctx, hit, claim.owner, next)
                hit.repoint(claim.owner)
                if hit.t > claim.last:
                    claim.last = hit.t
            else:
                if self.evict and claim is not None:
                    table.disown(key, claim.owner)
                claim = table.new(key, hit.acid, hit.t, claim)
                if self.evict:
                    table.own(key, hit.acid)
            table.expire(key, claim, (claim.last + self.duration + self.lateness) // self.tick)
        next(hit)

    def join_batch(self, hits: list[Hit], out: list[Hit]) -> None:
        """`handle` for a batch of hits in clock order, strategy `rewrite`
        only, each then appended to `out`: the very same claims and
        rewrites in one loop, without calls through the chain per hit (the
        identity step's whole work; `tests/test_fast_path.py` holds it to
        `handle`)."""
        assert not self.evict
        table = self.table
        claims = table.claims
        schedule = table.wheel.schedule
        mark = table.dirty.add if table.dirty is not None else None
        duration, lateness, tick = self.duration, self.lateness, self.tick
        append = out.append
        for hit in hits:
            jk = hit.join_key
            if jk is not None:
                key = (hit.property_id, jk)
                t = hit.t
                claim = claims.get(key)
                if claim is not None and not (
                    t - claim.last >= duration or hit.clock - lateness >= claim.last + duration
                ):
                    if claim.owner != hit.acid:
                        hit.repoint(claim.owner)
                    if t > claim.last:
                        claim.last = t
                else:
                    claim = table.new(key, hit.acid, t, claim)
                if claim.bucket < 0:  # table.expire(key, claim, bucket), inlined
                    schedule(key, (claim.last + duration + lateness) // tick)
                claim.bucket = (claim.last + duration + lateness) // tick
                if mark is not None:
                    mark(key)
            append(hit)

    def _move(self, ctx: Context, hit: Hit, owner: str, next: Next) -> None:
        """Evict: hand the keys of the hit's own ACID to `owner`, and emit an
        `Evict` for its proto-session (a no-op where it has none open)."""
        keys = self.table.owned.pop((hit.property_id, hit.acid), None)
        for key in keys or ():
            self.table.claims[key].owner = owner
            self.table.own(key, owner)
            if self.table.dirty is not None:
                self.table.dirty.add(key)
        next(Evict(hit.property_id, hit.acid, owner, hit.clock, hit.order))  # type: ignore[arg-type]

    def on_ping(self, ctx: Context, ts: int) -> None:
        """Forget claims no later hit can find alive."""
        claims = self.table.claims
        wheel = self.table.wheel
        for b, key in wheel.due(ts // self.tick):
            claim = claims.get(key)
            if claim is None or claim.bucket < b:
                continue
            if claim.bucket > b:  # seen again since it was filed: file it again
                wheel.schedule(key, claim.bucket)
            else:
                self.table.forget(key, claim)
                if self.evict:
                    self.table.disown(key, claim.owner)


class D8aIdentityJoin(IdentityJoin):
    """Identity rules `d8a` (SPEC rule 1): d8a v1.4's two-key claims, read in
    merge order. A hit has up to two join keys: its user ID (joining by user
    ID, non-empty; `Hit.user_id`) and its d8a session stamp (joining by
    stamp; `Hit.join_key`). Both are checked and registered at once under
    the hit's own ACID `A`: a key nobody owns (or whose claim lapsed, as in
    `IdentityJoin`) is claimed by `A`, a key `A` owns is seen again. Then
    the hit takes the owner of its user ID if another ACID owns it, else the
    owner of its stamp if another owns it, else stays `A`. A key another
    ACID owns is not seen again by this hit. Strategy `evict` moves `A`'s
    proto-session and keys to that owner, as `IdentityJoin` does.

    Its claims are keyed `(property_id, key)` like `IdentityJoin`'s, but one
    hit touches two keys, so the flow routes a property's hits to one
    identity shard (`engine.identity_shard`)."""

    def __init__(self, settings: Settings, table: ClaimTable) -> None:
        super().__init__(settings, table)
        self.by_user = settings.join_by_user_id

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        owner = self._claim(hit)
        if owner is not None:
            if self.evict:
                self._move(ctx, hit, owner, next)
            hit.repoint(owner)
        next(hit)

    def join_batch(self, hits: list[Hit], out: list[Hit]) -> None:
        """`handle` for a batch of hits in clock order, strategy `rewrite` only."""
        assert not self.evict
        claim = self._claim
        append = out.append
        for hit in hits:
            owner = claim(hit)
            if owner is not None:
                hit.repoint(owner)
            append(hit)

    def _claim(self, hit: Hit) -> str | None:
        """Check and register the hit's keys under its ACID; the other ACID
        it now belongs to (by user ID first, then by stamp), or None."""
        uid = hit.user_id if self.by_user else None
        stamp = hit.join_key
        if uid is None and stamp is None:
            return None
        table = self.table
        claims = table.claims
        pid, acid, t = hit.property_id, hit.acid, hit.t
        duration, lateness = self.duration, self.lateness
        lapsed_at = hit.clock - lateness  # a claim is lapsed once this reaches last + duration
        owner = None
        for jk in ("u:" + uid if uid else None, stamp):
            if jk is None:
                continue
            key = (pid, jk)
            claim = claims.get(key)
            if claim is None or t - claim.last >= duration or lapsed_at >= claim.last + duration:
                if self.evict and claim is not None:
                    table.disown(key, claim.owner)
                claim = table.new(key, acid, t, claim)
                if self.evict:
                    table.own(key, acid)
            elif claim.owner == acid:
                if t > claim.last:
                    claim.last = t
            else:
                if owner is None:
                    owner = claim.owner
                continue  # not seen again: its claim is unchanged
            table.expire(key, claim, (claim.last + duration + lateness) // self.tick)
        return owner


def identity_join(settings: Settings, table: ClaimTable) -> IdentityJoin:
    """The identity middleware of `settings.identity_rules`: `IdentityJoin`
    (classic) or `D8aIdentityJoin` (d8a); the chain around it is the same."""
    if settings.identity_rules == "d8a":
        return D8aIdentityJoin(settings, table)
    return IdentityJoin(settings, table)
