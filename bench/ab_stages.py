"""A/B of the library's stages in one process, CPU time, alternating chunks:
the `protosessions` package of another checkout (`--base`, imported under
the name `protosessions_base`) against this one, on the same hits, with a
check that both wrote the same sessions. Read the ratios; absolute figures
move with the machine's load. A benchmark: it asserts only that outputs match.

    git worktree add /tmp/base <commit> && python bench/ab_stages.py --base /tmp/base
"""
import argparse, gc, shutil, sys, tempfile, time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--base", required=True, help="a checkout whose protosessions/ is the baseline")
ap.add_argument("--input", default="/tmp/h300k.jsonl")
ap.add_argument("--lines", type=int, default=300_000)
args = ap.parse_args()
tmp = tempfile.mkdtemp()
shutil.copytree(Path(args.base) / "protosessions", Path(tmp) / "protosessions_base")
sys.path.insert(0, tmp)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
import protosessions_base as B
import protosessions as N
from protosessions_base import hit as bh, engine as be, config as bc, clock as bcl
from protosessions import hit as nh, engine as ne, config as nc, clock as ncl
print(B.__file__, N.__file__)
gc.set_threshold(100_000, 50, 100)
lines = [l.rstrip(b"\n") for l in open(args.input, "rb")][: args.lines]
CH = 2000
chunks = [lines[i:i + CH] for i in range(0, len(lines), CH)]
tt = time.thread_time
res = {k: 0.0 for k in ("parse_base", "parse_new", "ident_base", "ident_new", "chain_base", "chain_new", "end_base", "end_new")}
st = {}
for name, hm, em, cm, clm in (("base", bh, be, bc, bcl), ("new", nh, ne, nc, ncl)):
    s = cm.Settings()
    st[name] = dict(s=s, hm=hm, clock=clm.Clock(), ident=em.IdentityShard(s), shard=em.SessionShard(s, clm.Clock()), out=[])
order = [("base", "new"), ("new", "base")]
for i, chunk in enumerate(chunks):
    for name in order[i % 2]:
        d = st[name]; s = d["s"]; parse = d["hm"].parse_hit; clock = d["clock"]
        t0 = tt(); hits = []
        for raw in chunk:
            h = parse(raw, s, None, clock.now); clock.advance(h.t); hits.append(h)
        t1 = tt()
        joined = [x for b in range(0, len(hits), 1000) for x in d["ident"].on_hits(hits[b:b + 1000])]
        t2 = tt()
        for b in range(0, len(joined), 1000):
            d["out"].extend(d["shard"].on_hits(joined[b:b + 1000]))
        t3 = tt()
        res["parse_" + name] += t1 - t0; res["ident_" + name] += t2 - t1; res["chain_" + name] += t3 - t2
for name in ("base", "new"):
    t0 = tt(); st[name]["out"].extend(st[name]["shard"].close_all()); res["end_" + name] += tt() - t0
assert [x[1] for x in st["base"]["out"]] == [x[1] for x in st["new"]["out"]], "outputs differ"
n = len(lines)
for stage in ("parse", "ident", "chain", "end"):
    b, nn = res[stage + "_base"] / n * 1e6, res[stage + "_new"] / n * 1e6
    print(f"{stage:6} base {b:6.2f} us/hit  new {nn:6.2f} us/hit  new/base {nn / b:.2f}")
tb = sum(v for k, v in res.items() if k.endswith("base")); tn = sum(v for k, v in res.items() if k.endswith("new"))
print(f"total  base {tb / n * 1e6:6.2f} us/hit  new {tn / n * 1e6:6.2f} us/hit  new/base {tn / tb:.2f}  ({n} hits, outputs identical)")
