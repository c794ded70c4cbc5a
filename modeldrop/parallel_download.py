"""Parallel downloads: every node's `hf download` started at once, each waited on in the guide's order.

`run_job(job, on_line, on_event)` runs one node's `DownloadJob` in the calling thread (the guide's serial
order uses it alone): its progress lines go to `job.lines` and `on_line`, its span to
`on_event("start"|"end", job)`. `DownloadSupervisor(jobs)` takes, per node k, a `run(heartbeat) ->
DownloadResult` (one node's own download from the hub, e.g. `download.run_download` over its plan) and a
`stop() -> str` (stops that node's running hf by pid after an identity check); `start()` runs every job with
`run_job` in a background thread of its own (a job that raises is a failed download, rc 1); `wait(k)`
blocks until node k's job ended (no polling) and returns its `DownloadJob`. When a job ends with a non-zero
rc and `keep_going` is off, every job still running is stopped at once and records which node's failure
stopped it. `close()` stops what still runs (or, with `keep_going`, waits for it). Plain Python: the pytest
layer starts it from a fixture.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modeldrop.download import DownloadResult, hf_download_argv
from modeldrop.nodes import Node

RunFn = Callable[[Callable[[str], None]], DownloadResult]
StopFn = Callable[[], str]


@dataclass
class DownloadJob:
    """One node's background download: its progress lines, result, span and why it was stopped."""

    k: int
    run: RunFn
    stop: StopFn
    lines: list[str] = field(default_factory=list)
    result: DownloadResult | None = None
    started: float | None = None
    ended: float | None = None
    stopped_because: str | None = None
    stop_report: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def failed(self) -> bool:
        """True when the download ended with a non-zero rc (a stopped one included)."""
        return self.result is not None and self.result.rc != 0


def run_job(job: DownloadJob, on_line: Callable[[str], None], on_event: Callable[[str, DownloadJob], None],
            clock: Callable[[], float] = time.time) -> DownloadJob:
    """Run one node's download in this thread: its lines to `job.lines` and `on_line`, its span to `on_event`
    ("start", then "end" unless it raised). A download that ended with rc 0 after a stop was asked for
    finished before the stop reached it: it was not stopped."""
    def heartbeat(line: str) -> None:
        job.lines.append(line)
        on_line(line)

    job.started = clock()
    on_event("start", job)
    job.result = job.run(heartbeat)
    job.ended = clock()
    if job.result.rc == 0 and job.stopped_because:
        job.stop_report, job.stopped_because = f"finished before the stop ({job.stop_report})", None
    on_event("end", job)
    return job


def _never_raises(run: RunFn, clock: Callable[[], float]) -> RunFn:
    """`run`, with an exception turned into a failed result (rc 1, the exception as the reason)."""
    def guarded(heartbeat: Callable[[str], None]) -> DownloadResult:
        t0 = clock()
        try:
            return run(heartbeat)
        except Exception as e:  # noqa: BLE001 - a crashed job is a failed download, not a lost thread
            why = f"{type(e).__name__}: {e}"
            return DownloadResult(1, None, "", why, clock() - t0, why)
    return guarded


class DownloadSupervisor:
    """Runs every node's download at once; see the module docstring."""

    def __init__(self, jobs: Mapping[int, tuple[RunFn, StopFn]], *, keep_going: bool = False,
                 on_line: Callable[[str], None] | None = None,
                 on_event: Callable[[str, DownloadJob], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.jobs = {k: DownloadJob(k, _never_raises(run, clock), stop) for k, (run, stop) in sorted(jobs.items())}
        self.keep_going = keep_going
        self.on_line = on_line or (lambda line: None)
        self.on_event = on_event or (lambda kind, job: None)
        self.clock = clock
        self._lock = threading.Lock()
        self._threads: dict[int, threading.Thread] = {}

    def start(self) -> None:
        """Start every job's thread (idempotent)."""
        for k, job in self.jobs.items():
            if k not in self._threads:
                t = threading.Thread(target=self._run, args=(job,), name=f"download-node{k}", daemon=True)
                self._threads[k] = t
                t.start()

    def _run(self, job: DownloadJob) -> None:
        run_job(job, self.on_line, self.on_event, self.clock)
        if job.failed and not self.keep_going:
            self._stop_others(job)
        job.done.set()

    def _stop_others(self, failed: DownloadJob) -> None:
        """Stop every other running job, naming the failure that stopped it."""
        res = failed.result
        reason = (res.hub_reason or (res.stderr_tail.strip().splitlines() or ["no output"])[-1]) if res else "?"
        with self._lock:
            if failed.stopped_because:  # stopped itself: not a cause
                return
            victims = [j for j in self.jobs.values() if j is not failed and not j.done.is_set()
                       and j.stopped_because is None]
            for j in victims:
                j.stopped_because = f"node{failed.k}'s download failed (rc {res.rc if res else '?'}): {reason}"
        for j in victims:
            j.stop_report = _safe_stop(j)

    def wait(self, k: int, timeout: float | None = None) -> DownloadJob:
        """Node k's job once it has ended (TimeoutError when it is still running after `timeout`)."""
        job = self.jobs[k]
        if not job.done.wait(timeout):
            raise TimeoutError(f"node{k} download still running after {timeout:g}s")
        return job

    def running(self) -> list[int]:
        """Nodes whose download has not ended."""
        return [k for k, j in self.jobs.items() if not j.done.is_set()]

    def close(self, timeout: float = 120.0) -> dict[int, str]:
        """At session end: stop what still runs (by pid), or with keep_going wait for it; {k: what was done}."""
        out: dict[int, str] = {}
        for k in self.running():
            job = self.jobs[k]
            if self.keep_going:
                job.done.wait(timeout)
                out[k] = "finished" if job.done.is_set() else f"still running after {timeout:g}s (left running)"
                continue
            with self._lock:
                job.stopped_because = job.stopped_because or "the session ended before its gate waited for it"
            job.stop_report = _safe_stop(job)
            job.done.wait(timeout)
            out[k] = job.stop_report
        return out


def _safe_stop(job: DownloadJob) -> str:
    try:
        return job.stop()
    except Exception as e:  # noqa: BLE001 - reported, never raised from a worker thread
        return f"could not stop node{job.k}'s hf: {type(e).__name__}: {e}"


def download_argv_tail(model_id: str, local_dir: str) -> list[str]:
    """The argv words that identify one `hf download` into local_dir (contiguous in its command line): the
    command, model and target dir words exactly as `hf_download_argv` writes them."""
    return hf_download_argv("hf", model_id, local_dir)[1:4]


def _has_run(cmdline: list[str], words: list[str]) -> bool:
    n = len(words)
    return any(cmdline[i:i + n] == words for i in range(len(cmdline) - n + 1))


def stop_node_download(node: Node, model_id: str, local_dir: str, grace_s: float = 10) -> str:
    """Stop the hf processes on the node downloading model_id into local_dir: found by their argv,
    each stopped by pid with its start time and argv0 checked. Returns what was done."""
    target = node.expand_path(local_dir)
    words = download_argv_tail(model_id, target)
    found = node.run_probe("procs", {"pids": None, "exe_paths": None}, timeout=60)["procs"]
    mine = [p for p in found if _has_run(list(p.get("cmdline") or []), words)]
    results = [node.run_probe("stop", {"pid": p["pid"], "expect_start": p["start"],
                                       "expect_argv0": p["cmdline"][0], "grace_s": grace_s},
                              timeout=60 + grace_s)["result"] for p in mine]
    pids = ", ".join(f"pid {p['pid']}: {r}" for p, r in zip(mine, results, strict=True))
    return f"stopped {len(results)} hf process(es) on {node.name} ({pids})" if results else \
        f"no hf process left running on {node.name}"
