"""The polling loops behind the gates: observe nodes and APIs, hand observations to `verdicts`.

Every loop has a deadline from the run's options and returns a `Verdict` that says what was last
seen; none sleeps a fixed time to synchronise. `clock`/`sleep` are injectable for unit tests.
"""

from __future__ import annotations

import functools
import json
import shlex
import time
from collections.abc import Callable
from typing import Any

from modeldrop.bench.client import BenchClient, ChatRequest
from modeldrop.exo import logs as exologs
from modeldrop.exo import state as st
from modeldrop.exo.client import ExoClient, ExoError, ExoHTTPError
from modeldrop.exo.gone import GONE_EVERY_S, CallsInFlight, Due, Gone
from modeldrop.exo.verdicts import (
    StartupSample,
    chat_verdict,
    cluster_verdict,
    latency_verdict,
    logged_ring_verdict,
    ready_verdict,
    runner_map_lag,
    startup_verdict,
    transport_verdict,
)
from modeldrop.exo.wait import call_safely, poll
from modeldrop.pernode import each
from modeldrop.progress import Progress
from modeldrop.verdict import Fact, Verdict

API_UP_TIMEOUT_S = 120.0
SOCKETS_TIMEOUT_S = 60.0
# the chat gate's per-request bounds (run_chats): no new token for CHAT_STALL_S, and CHAT_TIMEOUT_S in all
# (connect, headers, body; the run options CHAT_STALL_S and CHAT_TIMEOUT_S set them); a serving check's chat
# gets SERVING_CHAT_S in all
CHAT_STALL_S, CHAT_TIMEOUT_S, SERVING_CHAT_S = 30.0, 120.0, 60.0
NODE_ID_TIMEOUT_S = 3.0  # one /node_id call of the startup watch, in all
INTERVAL_S = 0.5
CLUSTER_INTERVAL_S = 0.5
PROC_EVERY_S = 2.0  # the process probe of a node whose API answers (`ProcLook`)
# MLX ring connect retries sleep 1+2+4+8+16 s before `[ring] Couldn't connect (error: N)`;
# while runners are Connecting the stall budget is at least this, so the errno (G2) wins over "stuck" (F1).
# Only RunnerConnecting: EXO's runner connects the group in that status and reports RunnerConnected once connect()
# returned (worker/runner/runner.py), so a runner waiting at RunnerConnected (for every node's download, D1) has no
# errno left to come.
CONNECT_BUDGET_S = 45.0
CONNECTING = frozenset({"RunnerConnecting"})


def stall_budget(ready_timeout_s: float) -> float:
    """Seconds without any runner status/layer change that count as 'no progress'."""
    return max(20.0, min(180.0, ready_timeout_s / 3.0))


# -- startup --------------------------------------------------------------------------------------
class ProcLook:
    """A launcher's live process row (`launcher.proc()`, None once it is gone), probed at most every `every_s`: each
    probe is an SSH round trip and a python on the node. An exit or a restart after the API answered shows first as
    an API that stops answering, which asks for a fresh probe at once."""

    def __init__(self, launcher: Any, every_s: float = PROC_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.launcher, self.every_s, self.clock = launcher, every_s, clock
        self.row: dict | None = None
        self.at: float | None = None
        self.api_answered = False  # the node's API answered at some look

    def __call__(self, api_answers: bool, fresh: bool = False) -> dict | None:
        """The row as of this look, where the API answered (`api_answers`) or not: probed afresh when due, when
        `fresh`, or when an API that had answered does not."""
        now = self.clock()
        fresh = fresh or (not api_answers and self.api_answered)
        self.api_answered = self.api_answered or api_answers
        if fresh or self.at is None or self.row is None or now - self.at >= self.every_s:
            self.row, self.at = self.launcher.proc(), now
        return self.row


def sample_node(look: ProcLook, client: ExoClient, t0: float, clock: Callable[[], float],
                fresh: bool = False) -> StartupSample:
    """One startup sample of a node: its API's node id, and its process (`look`, afresh when `fresh`)."""
    nid, err = call_safely(lambda: client.node_id(timeout_s=NODE_ID_TIMEOUT_S))
    proc = look(bool(nid), fresh)
    return StartupSample(round(clock() - t0, 2), proc is not None, proc.get("start") if proc else None, nid, err)


def watch_startup(launchers: dict[int, Any], clients: dict[int, ExoClient], settle_s: float,
                  api_timeout_s: float = API_UP_TIMEOUT_S, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  on_up: Callable[[dict[int, str]], None] | None = None,
                  progress: Progress | None = None) -> Verdict:
    """Wait until every API answers (fail fast when a process exits), then watch for settle_s: each API every
    INTERVAL_S, each process (`ProcLook`) every PROC_EVERY_S, at once when its API stopped answering, and afresh at
    the window's end.

    `on_up({k: node id})` is called once every API answered, before the settle window: the caller starts
    what may overlap the window (the cluster-join watch); the window itself is still watched in full.
    `progress` gets each node's API answer, then its settle window, as it is seen."""
    t0 = clock()
    if progress is not None:
        progress.restart()
    samples: dict[int, list[StartupSample]] = {k: [] for k in launchers}
    settle: dict[str, float] = {}  # "from": when the settle window started (seconds after t0)
    procs = {k: ProcLook(la, clock=clock) for k, la in launchers.items()}

    def look(fresh: bool = False) -> dict[int, StartupSample]:
        out = each(launchers, lambda k: sample_node(procs[k], clients[k], t0, clock, fresh))
        for k, s in out.items():
            samples[k].append(s)
            if progress is not None:
                _startup_seen(progress, k, s, settle.get("from"), settle_s, api_timeout_s)
        return out

    up = poll(look, lambda o: all(s.node_id for s in o.values()), api_timeout_s, INTERVAL_S,
              stop=lambda o: any(not s.alive for s in o.values()), clock=clock, sleep=sleep)
    starts = {k: (launchers[k].record.start if launchers[k].record else None) for k in launchers}
    if up.done:
        if on_up is not None:
            on_up({k: s.node_id for k, s in up.value.items() if s.node_id})
        t1 = clock()
        settle["from"] = t1 - t0
        settled = poll(look, lambda o: clock() - t1 >= settle_s, settle_s + 5.0, INTERVAL_S,
                       stop=lambda o: any(not s.alive for s in o.values()), clock=clock, sleep=sleep)
        if not settled.stopped:
            look(fresh=True)  # the window's end seen afresh: a restart anywhere in it shows as a new start
    v = startup_verdict(samples, starts)
    v.details["elapsed_s"] = round(clock() - t0, 2)
    return v


def _startup_seen(progress: Progress, k: int, s: StartupSample, settle_from: float | None, settle_s: float,
                  api_timeout_s: float) -> None:
    """Node k's startup progress line: its API's answer (while it has not answered), then the settle window."""
    state = "exo exited" if not s.alive else (f"API up (node id {s.node_id[:12]})" if s.node_id else
                                              f"no answer yet ({s.api_error or 'connecting'})")
    if settle_from is None:
        if not s.node_id:
            progress.seen(f"node{k}", "its API to answer /node_id", state, api_timeout_s)
    else:
        progress.seen(f"node{k}", f"the settle window ({settle_s:.0f}s without an exit or restart)",
                      f"{state}, {s.t - settle_from:.0f}s into the window", settle_from + settle_s)


# -- cluster --------------------------------------------------------------------------------------
def views_of(clients: dict[int, ExoClient]) -> tuple[dict[int, st.ClusterView | None], dict[int, str]]:
    """Each node's cluster view (None where /state did not answer) and why it did not."""
    answers = each(sorted(clients), lambda k: call_safely(clients[k].state))  # every node at once
    out = {k: st.cluster_view(s) if isinstance(s, dict) else None for k, (s, _) in answers.items()}
    errors = {k: err or "/state is not an object" for k, (_, err) in answers.items() if out[k] is None}
    return out, errors


def watch_cluster(clients: dict[int, ExoClient], live_ids: dict[int, str], window_s: float,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  cancelled: Callable[[], bool] | None = None, progress: Progress | None = None,
                  meta: str = "MlxRing") -> Verdict:
    """Poll every API until all N nodes show, linked as EXO needs to place `meta` over them, or the window ends
    (isolation stop);
    `cancelled()` true ends it early (the caller no longer needs the answer); `progress` gets what each node's
    API sees (nodes seen / expected, links)."""
    n = len(live_ids)
    t0 = clock()

    def look() -> Verdict:
        views, errors = views_of(clients)
        if progress is not None:
            for k, seen in join_seen(views, errors, live_ids).items():
                progress.seen(f"node{k}", f"{n} nodes in its topology, placeable as {meta}", seen, window_s)
        return cluster_verdict(live_ids, views, n, meta, errors)

    res = poll(look, lambda v: v.ok, window_s, CLUSTER_INTERVAL_S,
               stop=(lambda v: cancelled()) if cancelled else None, clock=clock, sleep=sleep)
    v = res.value if res.value is not None else Verdict.failed(f"no /state answered ({res.last_error})")
    v.details["elapsed_s"] = round(clock() - t0, 2)
    if not v.ok and v.facts.get(Fact.isolated):
        v.reword(f"isolated for {window_s:.0f}s (cluster window): ")
    elif not v.ok and (v.facts.get(Fact.no_ring) or v.facts.get(Fact.one_way)):
        v.reword(f"for {window_s:.0f}s (cluster window): ")
    return v


def join_seen(views: dict[int, st.ClusterView | None], errors: dict[int, str],
              live_ids: dict[int, str]) -> dict[int, str]:
    """{k: `2/3 nodes, 4/6 links`} of each node's view of the live node ids (why not, where /state failed)."""
    want = set(live_ids.values())
    n = len(want)
    out = {}
    for k, view in sorted(views.items()):
        if view is None:
            out[k] = f"/state not readable ({errors.get(k) or 'no answer'})"
            continue
        links = sum(1 for a, b in view.topology.edges if a in want and b in want and a != b)
        out[k] = f"{len(view.members & want)}/{n} nodes, {links}/{n * (n - 1)} links"
    return out


# -- placement ------------------------------------------------------------------------------------
def place(client: ExoClient, model_id: str, sharding: str, instance_meta: str, n: int,
          created: dict | None = None) -> tuple[dict | None, Verdict | None]:
    """GET /instance/placement then POST /instance; (instance json, None) or (None, failed verdict). `created`, when
    given, receives POST /instance's answer (its `command_id`: EXO's id of the create command)."""
    try:
        inst = client.placement(model_id, sharding, instance_meta, n)
    except ExoHTTPError as e:
        return None, Verdict.failed(f"GET /instance/placement ({sharding}/{instance_meta}, min_nodes={n}): {e}",
                                    {"status": e.status, "body": e.body},
                                    {"http_status": e.status, "http_body": e.message})
    except ExoError as e:
        return None, Verdict.failed(f"GET /instance/placement: {e}", {}, {})
    try:
        answer = client.create_instance(inst)
        if created is not None and isinstance(answer, dict):
            created.update(answer)
    except ExoHTTPError as e:
        return None, Verdict.failed(f"POST /instance: {e}", {"status": e.status, "body": e.body, "instance": inst},
                                    {"http_status": e.status, "http_body": e.message})
    except ExoError as e:
        return None, Verdict.failed(f"POST /instance: {e}", {"instance": inst}, {})
    return inst, None


def clear_instances(client: ExoClient, model_id: str, timeout_s: float = 60.0) -> list[str]:
    """Delete existing instances of the model (an earlier run's) and wait until each is gone."""
    s, _ = call_safely(client.state)
    ids = [i.instance_id for i in st.instances_for_model(s or {}, model_id)]
    for iid in ids:
        call_safely(lambda iid=iid: client.delete_instance(iid))
    for iid in ids:
        poll(lambda iid=iid: client.get_instance(iid), lambda v: v is None, timeout_s, INTERVAL_S)
    return ids


SERVING_AFTER_S = 10.0   # how long no runner may show before a chat is tried as serving truth
SERVING_EVERY_S = 15.0   # how often the chat is retried while no runner shows


def wait_ready(client: ExoClient, instance_id: str, ready_timeout_s: float, stall_s: float | None = None,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
               serving: Callable[[], Verdict] | None = None, progress: Progress | None = None,
               names: dict[str, str] | None = None, model_id: str = "", gone: Gone | None = None,
               gone_every_s: float = GONE_EVERY_S) -> Verdict:
    """Poll /state until every runner is Ready/Running; fail fast on RunnerFailed, vanishing, a stall, or an exo
    process found dead (`gone`, asked every `gone_every_s`: the fact `exo_gone`).

    `progress` gets each node's runner state (and EXO's download of `model_id` there), nodes named by `names`
    ({node id: name}).

    Serving truth: while no runner of the instance shows in /state, `serving()` (a chat through every
    node) is tried every SERVING_EVERY_S; a chat that answers passes (the map lag is a warning fact),
    no runner and no chat by the stall/deadline is the fast stop "nodeToRunner=0 and no successful chat".
    `names` ({node id: "node2 (user@host)"}) names a failed runner's node by its configured name first.
    """
    stall_s = stall_budget(ready_timeout_s) if stall_s is None else stall_s
    t0 = clock()
    if progress is not None:
        progress.restart()
    track: dict[str, Any] = {"present": False, "key": None, "changed": t0, "stalled": None, "chat": None,
                             "chat_at": None, "chats": 0}
    appear_budget = max(30.0, stall_s)
    dead = Due(gone, gone_every_s, t0)

    def look() -> st.InstanceProgress:
        dead.check(clock())
        state = client.state()
        p = st.instance_progress(state, instance_id, names)
        if progress is not None:
            for node, seen in st.runner_progress(state, instance_id, model_id, names or {}).items():
                progress.seen(node, "its runner to be Ready", seen, ready_timeout_s)
        now = clock()
        if p.present:
            track["present"] = True
        if p.key() != track["key"]:
            track["key"], track["changed"] = p.key(), now
        quiet = now - track["changed"]
        connecting = any(x.kind in CONNECTING for x in p.statuses.values())
        budget = max(stall_s, CONNECT_BUDGET_S) if connecting else stall_s
        if (track["present"] and quiet >= budget) or (not track["present"] and now - t0 >= appear_budget):
            track["stalled"] = quiet
        _try_serving(p, track, serving, now - t0, now, final=track["stalled"] is not None)
        return p

    def served() -> bool:
        return track["chat"] is not None and track["chat"].ok

    def bad(p: st.InstanceProgress) -> bool:
        return (bool(p.failures) or (track["present"] and not p.present and not served())
                or track["stalled"] is not None or bool(dead.found))

    res = poll(look, lambda p: p.ready or served(), ready_timeout_s, INTERVAL_S, stop=bad, clock=clock, sleep=sleep)
    prog = res.value or st.InstanceProgress(instance_id, False, {}, [])
    if dead.found and not prog.ready:
        return Verdict.failed(f"instance {instance_id} not Ready after {res.elapsed_s:.1f}s: {prog.labels()}",
                              {"instance_id": instance_id, "runners": prog.labels(),
                               "elapsed_s": round(res.elapsed_s, 1)}, {Fact.exo_gone: dead.found})
    chat, vanished = track["chat"], track["present"] and not prog.present
    if serving is not None and not prog.statuses and not prog.failures and (served() or not vanished):
        return serving_verdict(prog, chat, track["chats"], res.elapsed_s, ever_present=track["present"])
    v = ready_verdict(prog, track["present"], track["stalled"] if track["present"] else None,
                      res.timed_out, res.elapsed_s)
    if res.last_error:
        v.details["last_error"] = res.last_error
    return v


def _try_serving(p: st.InstanceProgress, track: dict[str, Any], serving: Callable[[], Verdict] | None,
                 elapsed: float, now: float, final: bool) -> None:
    """Try a chat when no runner of the instance shows (and it is time to, or the poll is about to stop)."""
    if serving is None or p.statuses or p.failures or elapsed < SERVING_AFTER_S and not final:
        return
    if track["chat_at"] is not None and now - track["chat_at"] < SERVING_EVERY_S and not final:
        return
    track["chat"], track["chat_at"] = serving(), now
    track["chats"] += 1


def serving_verdict(prog: st.InstanceProgress, chat: Verdict | None, tries: int, elapsed_s: float,
                    ever_present: bool = True) -> Verdict:
    """No runner of the instance in /state: chat answered = serving (map lag); else the guide's fast stop."""
    where = ("instance absent from /state" if not prog.present
             else "nodeToRunner=0 (no runner of the instance in /state)")
    details = {"instance_id": prog.instance_id, "runners": prog.labels(), "elapsed_s": round(elapsed_s, 1),
               "chat_tries": tries, "chat": chat.details if chat else None}
    if chat is not None and chat.ok:
        lag = [f"{where} after {elapsed_s:.0f}s while chat answers"]
        return Verdict.passed(f"serving truth: {chat.summary} while /state shows {where} (runner map lag)",
                              details, {"runner_lag": lag})
    last = chat.summary if chat is not None else "no chat tried"
    return Verdict.failed(f"fast stop: {where} and no successful chat after {elapsed_s:.0f}s "
                          f"({tries} chat tries; last: {last}) - the guide's 'repeated create with nodeToRunner=0 "
                          "and no successful chat'", details,
                          {"no_runners_no_chat": True, **({"never_created": True} if not ever_present else {})})


# -- transport ------------------------------------------------------------------------------------
def ring_sockets(nodes: dict[int, Any], port: int) -> dict[int, list[dict]]:
    """Each node's sockets on the ring port (probe `sockets`: read, never connecting), every node at once."""
    def probe(k: int) -> list[dict]:
        r, _ = call_safely(lambda: nodes[k].run_probe("sockets", {"port": port}, timeout=SOCKETS_TIMEOUT_S))
        return (r or {}).get("sockets") or []
    return each(sorted(nodes), probe)


def check_transport(inst: st.Instance, node_ids: dict[int, str], node_logs: dict[int, str],
                    nodes: dict[int, Any], serving: Callable[[], Verdict] | None = None) -> Verdict:
    """Compare logged ring hosts with /state, look at sockets on the ring port (never connecting), scan errno lines
    (ring and JACCL). When /state's nodeToRunner does not say which node runs which rank, the ring is taken from
    the runners' own hostfile lines and sockets (`logged_ring_verdict`); when nothing can be checked, a chat through
    every node (`serving()`) is the evidence: it passes with a warning saying so, else the gate fails."""
    hostfiles = {k: exologs.hostfile_lines(t) for k, t in node_logs.items()}
    errors = {k: exologs.ring_connect_errors(t) for k, t in node_logs.items()}
    jaccl = {k: exologs.jaccl_connect_errors(t) for k, t in node_logs.items()}
    coords = {k: [m.group(0) for m in exologs.find("COORD_LINE", t)] for k, t in node_logs.items()}
    sockets: dict[int, list[dict]] = {}
    if inst.is_ring and inst.ephemeral_port and len(inst.node_ids) > 1:
        sockets = ring_sockets(nodes, inst.ephemeral_port)
    v = transport_verdict(inst, node_ids, hostfiles, sockets, errors, coords, jaccl)
    if not v.facts.get(Fact.no_runner_map):
        return v
    return _without_runner_map(inst, node_ids, hostfiles, errors, nodes, serving, v)


def _logged_port(inst: st.Instance, hostfiles: dict[int, list[exologs.HostfileLine]]) -> int | None:
    """The ring port: /state's ephemeralPort, else the own entry of a hostfile line of this instance."""
    if inst.ephemeral_port:
        return inst.ephemeral_port
    for lines in hostfiles.values():
        for h in lines:
            own = h.hosts[h.rank] if inst.instance_id in h.path and h.rank < len(h.hosts) else ""
            if own.rpartition(":")[2].isdigit():
                return int(own.rpartition(":")[2])
    return None


def _without_runner_map(inst: st.Instance, node_ids: dict[int, str], hostfiles: dict[int, list[exologs.HostfileLine]],
                        errors: dict[int, list[int]], nodes: dict[int, Any], serving: Callable[[], Verdict] | None,
                        v: Verdict) -> Verdict:
    """The transport verdict while /state lists no runner of a multi-shard instance (see `check_transport`)."""
    port = _logged_port(inst, hostfiles) if inst.is_ring else None
    logged = logged_ring_verdict(inst, node_ids, hostfiles, ring_sockets(nodes, port) if port else {}, errors)
    if logged is not None:
        logged.warnings.append("transport checked from the runners' own hostfile lines and sockets: /state's "
                               "nodeToRunner lists no runner of the instance (runner map lag)")
        return logged
    if serving is None or any(errors.values()):
        return v
    chat = serving()
    details = {**v.details, "serving_chat": chat.details}
    if not chat.ok:
        return Verdict.failed(v.problems + [f"and no chat through every node answered: {chat.summary}"], details,
                              v.facts)
    return Verdict.passed(
        "nothing to check after placement passed on serving truth: /state lists no runner of the instance and no "
        "runner logged its hostfile; chat through every node answered (the evidence)", details,
        {"runner_lag": ["nodeToRunner lists no runner of the instance at the transport gate"]},
        warnings=["transport not checked: /state lists no runner of the instance and no runner logged its hostfile "
                  f"line; chat through every node answered, which is the evidence ({chat.summary})"])


# -- chat -----------------------------------------------------------------------------------------
CHAT_PROMPT = [{"role": "user", "content": "Reply with one short sentence: what is 2 + 2?"}]


def one_chat(url: str, model_id: str, stream: bool, max_tokens: int = 64, stall_s: float = CHAT_STALL_S,
             timeout_s: float = CHAT_TIMEOUT_S) -> dict:
    """One chat completion through `url`, within timeout_s in all, as an evidence dict (never raises for
    server problems)."""
    client = BenchClient(url, model_id, request_timeout_s=timeout_s, stall_timeout_s=stall_s)
    try:
        rec = client.send(ChatRequest(messages=CHAT_PROMPT, max_tokens=max_tokens, stream=stream))
    finally:
        client.close()
    return {"url": url, "stream": stream, "status": rec.status, "error": rec.error, "error_kind": rec.error_kind,
            "text_chars": len(rec.text or ""), "reasoning_chars": len(rec.reasoning_text or ""),
            "text_head": (rec.text or rec.reasoning_text or "")[:200], "finish_reason": rec.finish_reason,
            "saw_done": rec.saw_done, "keepalives": rec.keepalives, "usage": rec.usage,
            "latency_s": round(rec.e2e, 3) if rec.e2e is not None else None,
            "ttft_s": round(rec.ttft, 3) if rec.ttft is not None else None,
            "command_id": rec.response_id}


def run_chats(urls: dict[int, str], model_id: str, stall_s: float = CHAT_STALL_S,
              timeout_s: float = CHAT_TIMEOUT_S, gone: Gone | None = None,
              gone_every_s: float = GONE_EVERY_S) -> Verdict:
    """Streamed and non-streamed, through every node's API, all at once, each request within timeout_s in all; the
    verdict lists every failure (in node order, streamed first) and each request's latency. With `gone`, an exo
    found dead ends the wait: the requests still in flight are cut and failed as `abandoned` (fact `exo_gone`)."""
    pairs = [(k, stream) for k in sorted(urls) for stream in (True, False)]
    calls = CallsInFlight(gone, gone_every_s)
    t0 = time.monotonic()
    got = calls.all([functools.partial(one_chat, urls[k], model_id, stream, stall_s=stall_s, timeout_s=timeout_s)
                     for k, stream in pairs], "chat request", timeout_s + 30)
    v = chat_verdict([{**(r or abandoned(urls[k], stream, calls.found)), "node": k}
                      for (k, stream), r in zip(pairs, got, strict=True)])
    v.details["wall_s"] = round(time.monotonic() - t0, 3)
    if calls.found:
        v.facts[Fact.exo_gone] = calls.found
    return v


def abandoned(url: str, stream: bool, found: dict[int, str]) -> dict:
    """The evidence of a chat request cut because an exo died while it was in flight."""
    dead = ", ".join(f"node{k} ({pid})" for k, pid in sorted(found.items()))
    return {"url": url, "stream": stream, "status": None, "error_kind": "abandoned",
            "error": f"cut while in flight: the exo of {dead} is no longer running (no answer can complete)"}


def serving_check(urls: dict[int, str], model_id: str, timeout_s: float = SERVING_CHAT_S) -> Verdict:
    """One short non-streamed chat through every node's API, all at once (the guide's serving truth), each within
    timeout_s in all."""
    def ask(k: int) -> dict:
        return {**one_chat(urls[k], model_id, False, max_tokens=8, stall_s=min(CHAT_STALL_S, timeout_s),
                           timeout_s=timeout_s), "node": k}
    return chat_verdict(list(each(sorted(urls), ask).values()))


LATENCY_REQUESTS = 3  # short requests per node for the latency-stability judgement


def latency_check(urls: dict[int, str], model_id: str, spread_max: float, stop: bool,
                  n: int = LATENCY_REQUESTS, timeout_s: float = SERVING_CHAT_S) -> Verdict:
    """`n` short identical non-streamed chats through each node, judged for latency stability (`latency_verdict`);
    a request that fails is its own problem (the chat gate's answers all passed just before)."""
    def ask(k: int) -> list[dict]:  # one node's requests one after another; the nodes at once
        return [one_chat(urls[k], model_id, False, max_tokens=8, stall_s=min(CHAT_STALL_S, timeout_s),
                         timeout_s=timeout_s) for _ in range(n)]
    lat: dict[int, list[float]] = {}
    failed = []
    for k, answers in each(sorted(urls), ask).items():
        for r in answers:
            if r.get("error") or r.get("latency_s") is None:
                failed.append(f"node{k}: short request failed: {r.get('error_kind')}: {str(r.get('error'))[:160]}")
            else:
                lat.setdefault(k, []).append(float(r["latency_s"]))
    v = latency_verdict(lat, spread_max, stop)
    if failed:
        return Verdict.failed(failed + v.problems, v.details, {"kinds": ["latency_request"]})
    return v


def runner_lag(clients: dict[int, ExoClient], instance_id: str) -> tuple[list[str], dict]:
    """Each node's view of the instance after a working chat: lag is evidence, not a verdict."""
    per, maps = {}, {}
    for k, (s, err) in each(sorted(clients), lambda k: call_safely(clients[k].state)).items():  # nodes at once
        per[k] = st.instance_progress(s or {}, instance_id)
        inst = st.instances(s or {}).get(instance_id)
        maps[f"node{k}"] = {"error": err, "nodeToRunner": inst.node_to_runner if inst else None,
                            "runners": per[k].labels() if per[k].present else None}
    return runner_map_lag(per), maps


def _norm(path: str) -> str:
    """Compare dirs as exo reports them: no trailing slash, macOS /private prefix dropped."""
    p = path.rstrip("/")
    return p[len("/private"):] if p.startswith("/private/") else p


# -- model cards (gates 1B and 5) -----------------------------------------------------------------
CARD_TIMEOUT_S = 30.0


def add_card_command(base_url: str, model_id: str) -> str:
    """The shell command that gives EXO a card for `model_id` (POST /models/add)."""
    body = json.dumps({"model_id": model_id})
    return (f"curl -s -X POST {shlex.quote(base_url + '/models/add')} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}")


def _listed(client: ExoClient, model_id: str) -> bool | None:
    return call_safely(lambda: client.has_card(model_id))[0]


def ensure_card(client: ExoClient, model_id: str, timeout_s: float = CARD_TIMEOUT_S, wait_first_s: float = 0.0,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """EXO (this API) lists a card for `model_id` in the unfiltered GET /v1/models: already, after
    `wait_first_s` (a card added on another node syncing here), or after POST /models/add."""
    details: dict[str, Any] = {"api": client.base_url}
    if wait_first_s > 0:
        poll(lambda: _listed(client, model_id), bool, wait_first_s, 0.5, clock=clock, sleep=sleep)
    have, err = call_safely(lambda: client.has_card(model_id))
    if err is not None:  # no answer is not "no card": say what failed
        details["models_error"] = err
        return Verdict.failed(f"GET {client.base_url}/v1/models failed ({err}): cannot tell whether EXO has a "
                              f"card for {model_id}", details, {"models_unreadable": True})
    if have:
        details["card"] = "present"
        return Verdict.passed(f"EXO has a model card for {model_id} ({client.base_url})", details,
                              {"has_card": True})
    cmd = add_card_command(client.base_url, model_id)
    try:
        details["add_response"] = client.add_model(model_id)
    except ExoError as e:
        details.update({"card": "missing", "add_error": str(e), "add_command": cmd})
        return Verdict.failed(f"EXO has no model card for {model_id} and POST /models/add failed ({e}); "
                              f"add it with: {cmd}", details, {"no_card": True, "add_command": cmd})
    listed = poll(lambda: _listed(client, model_id), bool, timeout_s, 0.5, clock=clock, sleep=sleep)
    if not listed.done:
        details.update({"card": "missing", "add_command": cmd})
        return Verdict.failed(f"EXO has no model card for {model_id}: POST /models/add answered but GET /v1/models "
                              f"did not list it within {timeout_s:.0f}s; add it with: {cmd}", details,
                              {"no_card": True, "add_command": cmd})
    details["card"] = "added"
    return Verdict.passed(f"EXO had no model card for {model_id}: added with POST /models/add ({client.base_url})",
                          details, {"has_card": True, "card_added": True})


def ensure_cards(clients: dict[int, ExoClient], model_id: str, timeout_s: float = CARD_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """Every node's API lists the card for `model_id`, adding it where needed (a card added on one node is
    shared through the cluster, so later nodes wait a few seconds for it before adding it themselves)."""
    per: dict[str, Any] = {}
    added = False
    for k, c in sorted(clients.items()):
        v = ensure_card(c, model_id, timeout_s, wait_first_s=10.0 if added else 0.0, clock=clock, sleep=sleep)
        per[f"node{k}"] = v.details
        if not v.ok:
            v.reword(f"node{k}: ")
            v.details = per
            return v
        added = added or bool(v.facts.get("card_added"))
    how = "added with POST /models/add" if added else "already there"
    return Verdict.passed(f"every node lists the model card for {model_id} ({how})", per,
                          {"has_card": True, "card_added": added})


# -- canary (gate 1B) -----------------------------------------------------------------------------
CANARY_MODEL_TIMEOUT_S = 120.0


def _canary_card(launcher: Any, client: ExoClient, model_id: str, node_id: str | None, t: float,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> Verdict:
    """The canary's card step: `ensure_card`, or why it failed (an exo that exited is said as such)."""
    card = ensure_card(client, model_id, clock=clock, sleep=sleep)
    if card.ok:
        return card
    if not launcher.proc():
        return Verdict.failed(f"canary: exo exited {t:.2f}s after start, before its model card could be checked "
                              f"({card.summary})", {"card": card.details}, {"exited": [1], "restarted": [1]})
    card.reword("canary: ")
    card.details = {"node_id": node_id, "card": card.details, "elapsed_s": round(t, 2)}
    return card


def canary_check(launcher: Any, client: ExoClient, model_id: str, model_dir: str,
                 api_timeout_s: float = API_UP_TIMEOUT_S, model_timeout_s: float = CANARY_MODEL_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 progress: Progress | None = None) -> Verdict:
    """exo alone on node 1: /node_id answers, EXO has (or is given) a card for the model, then the model is
    listed under ?status=downloaded from the audited dir; `progress` gets the API's answer, then the listing."""
    t0 = clock()
    prog = (progress or Progress.off()).restart()
    proc = ProcLook(launcher, clock=clock)

    def sample() -> StartupSample:
        s = sample_node(proc, client, t0, clock)
        prog.seen("node1", "the canary's API to answer /node_id", "exo exited" if not s.alive else
                  f"no answer yet ({s.api_error or 'connecting'})", api_timeout_s)
        return s

    def listing() -> list[str] | None:
        ids = call_safely(client.downloaded_model_ids)[0]
        prog.seen("node1", f"{model_id} under /v1/models?status=downloaded",
                  f"listed: {', '.join(ids) if ids else 'none'}", model_timeout_s)
        return ids

    up = poll(sample, lambda s: bool(s.node_id), api_timeout_s, INTERVAL_S,
              stop=lambda s: not s.alive, clock=clock, sleep=sleep)
    last = up.value
    if not up.done:
        why = "exo exited" if last is not None and not last.alive else f"no answer within {api_timeout_s:.0f}s"
        error = last.api_error if last else up.last_error
        exited = [1] if last and not last.alive else []
        return Verdict.failed(f"canary: API {client.base_url}/node_id: {why} ({error})",
                              {"last": last.__dict__ if last else None}, {"exited": exited, "no_api": [1]})
    card = _canary_card(launcher, client, model_id, last.node_id, clock() - t0, clock, sleep)
    if not card.ok:
        return card
    # an API that stops answering is a sample too (None), so an exo that died is seen at once, not at the deadline
    listed = poll(listing, lambda ids: model_id in (ids or []),
                  model_timeout_s, INTERVAL_S, stop=lambda ids: not proc(ids is not None), clock=clock, sleep=sleep)
    s, _ = call_safely(client.state)
    dls = [d.__dict__ for d in st.downloads_for_model(s or {}, model_id)]
    details = {"node_id": last.node_id, "card": card.details, "downloaded": listed.value, "downloads": dls,
               "elapsed_s": round(clock() - t0, 2)}
    if listed.stopped:
        return Verdict.failed(f"canary: exo exited {details['elapsed_s']}s after start, before listing {model_id} "
                              f"(last listing: {listed.value or []})", details, {"exited": [1], "restarted": [1]})
    if not listed.done:
        failed = [d for d in dls if d["kind"] == "DownloadFailed"]
        why = f"; DownloadFailed: {failed[0]['error_message']}" if failed else ""
        return Verdict.failed(f"canary: EXO has a card for {model_id} but does not list it under "
                              f"/v1/models?status=downloaded within {model_timeout_s:.0f}s (listed: "
                              f"{listed.value or []}){why}", details,
                              {"not_listed": True, "has_card": True, "download_failed": bool(failed)})
    dirs = {d["model_directory"] for d in dls if d["kind"] == "DownloadCompleted" and d["model_directory"]}
    if dirs and _norm(model_dir) not in {_norm(d) for d in dirs}:
        return Verdict.failed(f"canary: exo found {model_id} at {sorted(dirs)}, not at the audited {model_dir}",
                              details, {"dir_drift": True})
    how = "card added with POST /models/add, " if card.facts.get("card_added") else ""
    return Verdict.passed(f"canary: API up, {how}{model_id} listed as downloaded"
                          + (f" from {model_dir}" if dirs else "") + f" after {details['elapsed_s']}s", details,
                          {"card_added": bool(card.facts.get("card_added"))})
