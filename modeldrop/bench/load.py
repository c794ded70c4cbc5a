"""Load generation: N threads released together by a barrier, round after round.

Contract
--------
`run_rounds(client, make_request, concurrency, rounds, warmup=1, on_record=None, on_warmup=None)` returns
the measured records (warmups excluded, never returned; `on_warmup(record)` sees each), each tagged
`"r<round>.t<thread>"`. `client` may be a list of clients (one per node's
API): thread i then sends through `client[i % len(client)]`.
Every thread first sends `warmup` requests of its own (opening its keep-alive connection, so a
TCP connect is not charged to the first measured TTFT), then for each round all threads wait at
a `threading.Barrier` and fire at once; the next round starts when every thread has finished
the previous one. `on_record(record)` is called from the worker thread after each measured
request (use it for heartbeats); it must be cheap and thread-safe.

Bounded: each request ends within the client's `request_timeout_s` (its total deadline); a thread
still inside one request `REQUEST_GRACE_S` after that, a thread that does not reach the barrier
within `barrier_timeout_s` of the first one, or does not finish within that long after the first
thread finished, makes `run_rounds` raise `BarrierTimeout` (one line, naming the threads still
busy) instead of waiting, also while every thread is inside a request; the stuck threads are
daemons and are left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from modeldrop.bench.client import BenchClient, ChatRequest, RequestRecord

MakeRequest = Callable[[int, int], ChatRequest]  # (round, thread) -> request
BARRIER_TIMEOUT_S = 1800.0
REQUEST_GRACE_S = 30.0  # past a request's own total deadline, before the round gives up on its thread


class BarrierTimeout(RuntimeError):
    """Some load threads never reached the round barrier (or never finished) within the bound."""


def run_rounds(client: BenchClient | Sequence[BenchClient], make_request: MakeRequest, concurrency: int, rounds: int,
               warmup: int = 1, on_record: Callable[[RequestRecord], None] | None = None,
               make_warmup: MakeRequest | None = None, barrier_timeout_s: float = BARRIER_TIMEOUT_S,
               request_grace_s: float = REQUEST_GRACE_S,
               on_warmup: Callable[[RequestRecord], None] | None = None) -> list[RequestRecord]:
    """Run `rounds` barrier-synchronised rounds of `concurrency` requests; see module contract."""
    if concurrency < 1 or rounds < 1:
        raise ValueError("concurrency and rounds must be >= 1")
    barrier = threading.Barrier(concurrency, timeout=barrier_timeout_s)
    results: list[list[RequestRecord]] = [[] for _ in range(concurrency)]
    failures: list[BaseException] = []
    clients = list(client) if isinstance(client, (list, tuple)) else [client]
    in_request: list[float | None] = [None] * concurrency  # since when each thread is inside client.send

    def send(i: int, req: ChatRequest) -> RequestRecord:
        in_request[i] = time.monotonic()
        try:
            return clients[i % len(clients)].send(req)
        finally:
            in_request[i] = None

    def worker(i: int) -> None:
        try:
            for w in range(warmup):
                warm = send(i, (make_warmup or make_request)(-1 - w, i))
                if on_warmup is not None:
                    on_warmup(warm)
            for r in range(rounds):
                barrier.wait()
                rec = send(i, make_request(r, i))
                rec.tag = rec.tag or f"r{r}.t{i}"
                results[i].append(rec)
                if on_record is not None:
                    on_record(rec)
        except BaseException as e:  # a bug here must not hang the other threads at the barrier
            failures.append(e)
            barrier.abort()
        finally:
            clients[i % len(clients)].close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-load-{i}", daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    request_limit_s = getattr(clients[0], "request_timeout_s", None)
    _join_bounded(threads, barrier, barrier_timeout_s, in_request,
                  request_limit_s + request_grace_s if request_limit_s else None)
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
    if real:
        raise real[0]
    if failures:
        raise BarrierTimeout(f"load: the round barrier broke: a thread did not arrive within {barrier_timeout_s:g}s")
    return [rec for per_thread in results for rec in per_thread]


def _join_bounded(threads: list[threading.Thread], barrier: threading.Barrier, timeout_s: float,
                  in_request: list[float | None], request_limit_s: float | None) -> None:
    """Wait for the threads; once the barrier broke or one thread finished, give the rest timeout_s at most
    (a broken barrier: only until the threads waiting on it have left), then raise BarrierTimeout. A thread
    inside one request (in_request[i]: since when) longer than request_limit_s raises it at once, whatever
    the others do."""
    deadline: float | None = None
    while True:
        alive = [t for t in threads if t.is_alive()]
        if not alive:
            return
        now = time.monotonic()
        stuck = [threads[i].name for i, t0 in enumerate(in_request)
                 if request_limit_s is not None and t0 is not None and now - t0 > request_limit_s]
        if stuck:
            barrier.abort()
            raise BarrierTimeout(f"load: {', '.join(stuck)} still in one request after {request_limit_s:g}s (the "
                                 "client's total bound on a request and its grace): the server or the connection "
                                 "is wedged")
        if deadline is None and (len(alive) < len(threads) or barrier.broken):
            deadline = now + timeout_s
        if deadline is not None and (now > deadline or (barrier.broken and barrier.n_waiting == 0
                                                         and len(alive) < len(threads))):
            barrier.abort()
            names = ", ".join(t.name for t in alive)
            raise BarrierTimeout(f"load: {len(alive)} of {len(threads)} threads ({names}) still in a request "
                                 f"after the round barrier's {timeout_s:g}s")
        alive[0].join(0.1)
