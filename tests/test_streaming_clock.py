"""The streaming clock: hits drive it; idle, it follows wall time; restored
from a snapshot, it follows the wall from the moment of the restore."""

from __future__ import annotations

import subprocess
import sys

import orjson

import flows.steps as steps
from golden_cases import hits_path
from protosessions.clock import WallFollowingClock
from protosessions.config import Settings
from protosessions.engine import SessionShard
from protosessions.hit import parse_hit
from protosessions.timefmt import format_time_us

S = 1_000_000
T0 = 1_735_732_800_000_000


def test_wall_following_clock_waits_for_an_idle_tick() -> None:
    c = WallFollowingClock(0, 0, idle_us=S)
    c.advance(T0)
    c.mark(5 * S)
    c.follow(5 * S + S // 2)  # hits came half a tick ago: not idle
    assert c.now == T0
    c.follow(5 * S + 3 * S)
    assert c.now == T0 + 3 * S
    assert c.wall_at(T0 + 10 * S) == 5 * S + 10 * S


def test_restored_streaming_shard_closes_when_idle(monkeypatch) -> None:
    settings = Settings(session_duration_us=30 * S)
    raw = orjson.dumps({"id": "h1", "client_id": "a", "property_id": "P",
                        "server_received_time": format_time_us(T0)})
    shard = SessionShard(settings, WallFollowingClock())
    shard.on_hits([parse_hit(raw, settings, None, T0)])
    snap = shard.snapshot()

    wall = [T0 + 3600 * S]  # resumed an hour of wall time later
    monkeypatch.setattr(steps, "wall_now_us", lambda: wall[0])
    caught_up = (0, T0, True, 1, T0)  # the one identity shard: nothing held back
    merge = ((1, ((0, caught_up[1:3] + (T0,)),)), (), 0)
    logic = steps.SessionLogic(settings, steps.make_clock(True, False, S), (snap, merge),
                               finite=False)
    wall[0] += 31 * S
    closed, _ = logic.on_notify()
    assert closed == []  # restored, the upstream counts as not caught up until it says so
    logic.on_batch([(0, [], (caught_up,))])
    closed, _ = logic.on_notify()
    assert closed == []  # the restored clock does not jump by the downtime
    wall[0] += 31 * S  # idle for longer than the session duration
    closed, _ = logic.on_notify()
    assert [orjson.loads(b)["close_reason"] for _, b in closed] == ["inactivity"]
    assert logic.shard.empty


def test_dead_letters_default_to_stderr_next_to_the_summary(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--input",
                           str(hits_path("16_bad_input")), "--output", str(tmp_path / "s.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert sum(1 for line in lines if line.startswith('{"error"')) == 13
    assert lines[-1].startswith("protosessions: 213 hits read")
