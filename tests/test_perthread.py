"""protosessions.perthread: one object per OS thread, kept across calls, also
on the worker threads Bytewax starts itself (`cluster_main`, `bytewax.run`),
where `threading.local` values did not outlive one call."""

from __future__ import annotations

import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from flows.routing import PerWorker
from protosessions import stats
from protosessions.perthread import PerThread


def test_each_python_thread_keeps_its_own_object() -> None:
    made: list[object] = []
    per = PerThread(lambda: made.append(object()) or made[-1])
    seen: dict[str, list[int]] = {}
    together = threading.Barrier(3)  # alive at once: an ended thread's id may be reused

    def work(name: str) -> None:
        together.wait()
        seen[name] = [id(per.get()) for _ in range(50)]
        together.wait()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 3
    assert all(len(set(ids)) == 1 for ids in seen.values())
    assert len({ids[0] for ids in seen.values()}) == 3
    assert len(per.values()) == 3


def _flow(step, out: list) -> Dataflow:
    flow = Dataflow("perthread")
    items = op.input("in", flow, TestingSource(list(range(400)), batch_size=1))
    op.output("out", op.flat_map_batch("step", items, step), TestingSink(out))
    return flow


def test_a_bytewax_worker_thread_keeps_its_object_across_batches() -> None:
    made: list[int] = []
    per = PerThread(lambda: made.append(threading.get_ident()) or len(made))
    out: list = []
    cluster_main(_flow(lambda batch: [per.get() for _ in batch], out), [], 0,
                 worker_count_per_proc=2)
    assert len(out) == 400
    assert len(made) <= 2  # one per worker that got a batch, not one per batch
    assert sorted(set(out)) == list(range(1, len(made) + 1))


def test_routers_and_counters_are_made_once_per_worker() -> None:
    routers: list[object] = []

    class Counting:
        def route(self, parts):
            stats.counter()["perthread-test"] += 1
            return [x for x, _ in parts]

    def make():
        routers.append(Counting())
        return routers[-1]

    stats.reset()
    counters = len(stats._counters.values())
    out: list = []
    cluster_main(_flow(PerWorker(make, lambda batch: ((x, None) for x in batch)), out), [], 0,
                 worker_count_per_proc=2)
    assert sorted(out) == list(range(400))
    assert 1 <= len(routers) <= 2
    assert stats.totals()["perthread-test"] == 400
    assert len(stats._counters.values()) - counters <= 2  # was one more every batch
