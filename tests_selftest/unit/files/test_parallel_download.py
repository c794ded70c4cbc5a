"""The download supervisor behind --parallel-downloads, with fake per-node downloads: every job starts at
once, gates wait in order, a failure stops the others (each told why) unless keep_going, and close()
stops what no gate waited for."""

from __future__ import annotations

import threading

from modeldrop.download import DownloadResult, hf_download_argv
from modeldrop.parallel_download import DownloadSupervisor, _has_run, download_argv_tail


class FakeDownload:
    """A download that runs until released (rc given then) or stopped (rc 143)."""

    def __init__(self, rc: int = 0, reason: str | None = None):
        self.rc, self.reason = rc, reason
        self.started = threading.Event()
        self.release = threading.Event()
        self.stops = 0

    def run(self, heartbeat):
        self.started.set()
        heartbeat("nodeX download: 1.0 MiB")
        self.release.wait(10)
        rc = 143 if self.stops else self.rc
        return DownloadResult(rc, None, "", self.reason or "", 0.1, self.reason)

    def stop(self) -> str:
        self.stops += 1
        self.release.set()
        return "stopped 1 hf process(es)"


def supervisor(fakes: dict[int, FakeDownload], **kw) -> DownloadSupervisor:
    return DownloadSupervisor({k: (f.run, f.stop) for k, f in fakes.items()}, **kw)


def test_every_download_starts_at_once_and_gates_wait_in_order():
    fakes = {1: FakeDownload(), 2: FakeDownload()}
    events: list[tuple[str, int]] = []
    sup = supervisor(fakes, on_event=lambda kind, job: events.append((kind, job.k)))
    sup.start()
    assert fakes[1].started.wait(5) and fakes[2].started.wait(5), "node 2 started while node 1 runs"
    fakes[2].release.set()
    assert sup.wait(2, 5).result.rc == 0 and sup.running() == [1], "node 2 done, node 1 still running"
    fakes[1].release.set()
    job1 = sup.wait(1, 5)
    assert job1.result.rc == 0 and job1.lines == ["nodeX download: 1.0 MiB"] and job1.stopped_because is None
    assert events[:2] == [("start", 1), ("start", 2)] and ("end", 2) in events
    assert sup.close() == {}


def test_a_failure_stops_the_other_downloads_and_says_why():
    fakes = {1: FakeDownload(), 2: FakeDownload(rc=1, reason="429 Too Many Requests"), 3: FakeDownload()}
    sup = supervisor(fakes)
    sup.start()
    fakes[2].release.set()
    job1, job3 = sup.wait(1, 5), sup.wait(3, 5)
    assert fakes[1].stops == 1 and fakes[3].stops == 1 and fakes[2].stops == 0
    assert job1.result.rc == 143 and job1.stopped_because == "node2's download failed (rc 1): 429 Too Many Requests"
    assert job3.stop_report == "stopped 1 hf process(es)"
    assert sup.wait(2, 5).stopped_because is None, "the failing node is not 'stopped'"


def test_keep_going_lets_the_others_finish():
    fakes = {1: FakeDownload(), 2: FakeDownload(rc=1, reason="boom")}
    sup = supervisor(fakes, keep_going=True)
    sup.start()
    fakes[2].release.set()
    assert sup.wait(2, 5).failed
    assert sup.running() == [1] and fakes[1].stops == 0
    fakes[1].release.set()
    assert sup.wait(1, 5).result.rc == 0 and fakes[1].stops == 0


def test_close_stops_what_no_gate_waited_for():
    fakes = {1: FakeDownload(), 2: FakeDownload()}
    sup = supervisor(fakes)
    sup.start()
    fakes[1].release.set()
    sup.wait(1, 5)
    assert fakes[2].started.wait(5)
    assert sup.close(timeout=5) == {2: "stopped 1 hf process(es)"}
    assert fakes[2].stops == 1 and "session ended" in sup.jobs[2].stopped_because


def test_a_crashing_job_is_a_failed_download():
    def boom(heartbeat):
        raise OSError("ssh: connection refused")
    other = FakeDownload()
    sup = DownloadSupervisor({1: (boom, lambda: "none"), 2: (other.run, other.stop)})
    sup.start()
    job = sup.wait(1, 5)
    assert job.failed and "OSError: ssh: connection refused" in job.result.hub_reason
    assert sup.wait(2, 5).stopped_because.startswith("node1's download failed")


def test_download_processes_are_found_by_their_argv():
    words = download_argv_tail("org/m", "/h/models/org--m")
    running = ["/usr/bin/python3", *hf_download_argv("/x/hf", "org/m", "/h/models/org--m", ["*.json"], "main")]
    assert _has_run(running, words)
    assert not _has_run(["/usr/bin/python3", *hf_download_argv("/x/hf", "org/m", "/h/models/org--m2")], words)
    assert not _has_run(["sh", "-c", " ".join(running)], words)


def test_a_download_that_finished_before_the_stop_is_not_called_stopped():
    fast, failing = FakeDownload(), FakeDownload(rc=1, reason="boom")
    fast.stop = lambda: "no hf process left running"  # type: ignore[method-assign] - it had exited already
    sup = supervisor({1: fast, 2: failing})
    sup.start()
    with sup._lock:
        sup.jobs[1].stopped_because = "node2's download failed (rc 1): boom"  # the stop raced the end
    fast.release.set()
    job = sup.wait(1, 5)
    assert job.result.rc == 0 and job.stopped_because is None
