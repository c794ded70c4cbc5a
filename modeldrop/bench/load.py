"""Load generation: N threads released together by a barrier, round after round.

Contract
--------
`run_rounds(client, make_request, concurrency, rounds, warmup=1, on_record=None)` returns the
measured records (warmups excluded, never returned), each tagged `"r<round>.t<thread>"`.
Every thread first sends `warmup` requests of its own (opening its keep-alive connection, so a
TCP connect is not charged to the first measured TTFT), then for each round all threads wait at
a `threading.Barrier` and fire at once; the next round starts when every thread has finished
the previous one. `on_record(record)` is called from the worker thread after each measured
request (use it for heartbeats); it must be cheap and thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from modeldrop.bench.client import BenchClient, ChatRequest, RequestRecord

MakeRequest = Callable[[int, int], ChatRequest]  # (round, thread) -> request


def run_rounds(client: BenchClient, make_request: MakeRequest, concurrency: int, rounds: int,
               warmup: int = 1, on_record: Callable[[RequestRecord], None] | None = None,
               make_warmup: MakeRequest | None = None) -> list[RequestRecord]:
    """Run `rounds` barrier-synchronised rounds of `concurrency` requests; see module contract."""
    if concurrency < 1 or rounds < 1:
        raise ValueError("concurrency and rounds must be >= 1")
    barrier = threading.Barrier(concurrency)
    results: list[list[RequestRecord]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for w in range(warmup):
                client.send((make_warmup or make_request)(-1 - w, i))
            for r in range(rounds):
                barrier.wait()
                rec = client.send(make_request(r, i))
                rec.tag = rec.tag or f"r{r}.t{i}"
                results[i].append(rec)
                if on_record is not None:
                    on_record(rec)
        except BaseException as e:  # a bug here must not hang the other threads at the barrier
            failures.append(e)
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-load-{i}", daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
    if real:
        raise real[0]
    return [rec for per_thread in results for rec in per_thread]
