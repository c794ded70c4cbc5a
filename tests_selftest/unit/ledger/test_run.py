"""The run ledger of a whole (fake) run: run folder + reports/latest, ledger.jsonl records, handoff.md
sections and Hand-off Block, ledger.html, NEXT_COMMAND that works as printed, the profile update
after a green bootstrap, warnings, signatures, and no token anywhere."""

from __future__ import annotations

import json
import re

from modeldrop.ledger.handoff import HANDOFF_KEYS, SECTIONS
from tests_selftest.support.plugin_kit import (
    BASE,
    FULL_ORDER_2,
    default_facts,
    handoff_block,
    jsonl,
    latest,
    make_suite,
    run_shell,
    set_behaviour,
    set_facts,
    trace,
)

TOKEN = "hf_SeCrEtToKeN0123456789"


def test_run_folder_layout_and_latest(pytester):
    make_suite(pytester)
    assert pytester.runpytest(*BASE).ret == 0
    first = latest(pytester)
    assert re.fullmatch(r"\d{8}T\d{6}Z-org--tiny-model(-\d+)?", first.name)
    for name in ("ledger.html", "ledger.jsonl", "handoff.md", "manifests", "logs", "exo", "bench", "plots"):
        assert (first / name).exists(), name
    assert (pytester.path / "reports" / "latest").is_symlink()
    assert (pytester.path / "reports" / "pass_cache.json").exists()
    assert pytester.runpytest(*BASE).ret == 0
    second = latest(pytester)
    assert second != first and second.parent == first.parent
    assert not list(second.parent.glob(".*tmp"))


def test_ledger_jsonl_records_every_gate_event(pytester):
    make_suite(pytester, behaviour={"node2_verify": "fail:1 shard truncated",
                                    "node1_verify:notes": {"safetensors_count": 3,
                                                           "warning": "size plausibility skipped (--fast)"}})
    pytester.runpytest(*BASE, "--fast")
    records = jsonl(latest(pytester))
    assert records[0]["event"] == "run_start" and records[0]["order"] == FULL_ORDER_2
    assert records[-1]["event"] == "run_end" and records[-1]["exitstatus"] == 1
    events = [(r["event"], r.get("gate")) for r in records if r["event"] in ("gate_start", "pass", "fail", "skip")]
    assert events[:4] == [("gate_start", "preflight"), ("pass", "preflight"),
                          ("gate_start", "node1_download"), ("pass", "node1_download")]
    assert ("fail", "node2_verify") in events and ("skip", "chat") in events
    notes = [r for r in records if r["event"] == "note"]
    assert {"gate": "node1_verify", "key": "safetensors_count", "value": 3} in [
        {k: n[k] for k in ("gate", "key", "value")} for n in notes]
    assert any(r["event"] == "warning" and "plausibility" in str(r.get("value")) for r in records)
    assert any(r["event"] == "signature" and r["signatures"][0]["id"] == "SIG-1" for r in records)
    assert all({"t", "time", "event"} <= set(r) for r in records)


def test_handoff_sections_and_block(pytester):
    make_suite(pytester, behaviour={"node1_canary": "fail:API never answered on :52415",
                                    "node1_verify:notes": {"warning": "gguf count not checked (--fast)"}})
    pytester.runpytest(*BASE)
    text = (latest(pytester) / "handoff.md").read_text()
    positions = [text.index(f"## {s}") for s in SECTIONS]
    assert positions == sorted(positions)
    block = handoff_block(latest(pytester))
    assert list(block) == list(HANDOFF_KEYS)
    assert block["MODEL"] == "org/tiny-model"
    assert block["NODES"] == "studio1,studio2"
    assert block["MODEL_DIRS"] == "~/.exo/models/org--tiny-model,~/.exo/models/org--tiny-model"
    assert block["LAST_PASS_PHASE"] == "1A (node1_verify)"
    assert block["CURRENT_PHASE"] == "1B (node1_canary)"
    assert block["KNOWN_BLOCKER"].startswith("node1_canary (failed): API never answered on :52415")
    assert "SIG-1" in block["KNOWN_BLOCKER"]
    assert block["STRONGEST_EVIDENCE"] == "node1_canary: API never answered on :52415"
    assert block["DO_NOT_REPEAT"] == "preflight,node1_download,node1_verify"
    assert block["NEXT_COMMAND"].endswith("gates/ --model org/tiny-model --env-file test.env -k node1_canary")
    assert "| node1_canary | 1B | failed |" in text
    assert "| SIG-1 | node1_canary | fake |" in text
    assert "gguf count not checked" in text  # --fast warnings reach the hand-off
    # the guide's stable sections carry their stable content, and the block uses its `FIELD: value` lines
    sections = {name: text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0] for name in SECTIONS}
    assert "Confirm serving truth with an actual /v1/chat/completions" in sections["90-Second Handoff"]
    assert "nodeToRunner=0 and no successful chat" in sections["90-Second Handoff"]
    assert "| 1B | node1_canary | exo alone on node 1" in sections["Phase Gates"]
    assert "| PASS if | STOP if |" in sections["Phase Gates"] and "failed" not in sections["Phase Gates"]
    assert "| SEED-MAP-LAG | placement, chat |" in sections["Failure Signatures"]
    assert "| node1_canary | 1B | failed |" in sections["Run Ledger"]
    assert "KNOWN_BLOCKER: node1_canary (failed)" in sections["Hand-off Block"]
    assert "\nMODEL: org/tiny-model\n" in sections["Hand-off Block"] and "MODEL=" not in sections["Hand-off Block"]


def test_next_command_reruns_the_failed_gate_as_printed(pytester):
    make_suite(pytester, behaviour={"node2_verify": "fail:1 shard truncated"})
    assert pytester.runpytest(*BASE).ret == 1
    trace(pytester)
    nxt = handoff_block(latest(pytester))["NEXT_COMMAND"]
    set_behaviour(pytester, {})  # the operator fixed node 2's files
    done = run_shell(nxt, pytester.path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert trace(pytester) == ["node2_verify"]
    records = jsonl(latest(pytester))
    assert [r["gate"] for r in records if r["event"] == "reuse"] == FULL_ORDER_2[:5]
    block = handoff_block(latest(pytester))
    assert block["LAST_PASS_PHASE"] == "2A (node2_verify)"
    # The rest of the order has not run yet: resume from the first gate without a pass.
    assert block["NEXT_COMMAND"].endswith("--resume-bootstrap")
    done = run_shell(block["NEXT_COMMAND"], pytester.path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert trace(pytester) == FULL_ORDER_2[6:]
    assert "benchmarks/ --model org/tiny-model" in handoff_block(latest(pytester))["NEXT_COMMAND"]


def test_green_bootstrap_updates_the_profile_and_points_at_benchmarks(pytester):
    notes = {"total_size_bytes": 5_000_000_000, "safetensors_count": 3, "gguf_count": 0, "file_count": 7,
             "shard_pattern": "model-*-of-00003.safetensors", "required_files": ["config.json", "tokenizer.json"]}
    make_suite(pytester, behaviour={"node1_verify:notes": notes, "placement:notes": {"instance_id": "inst-42"}},
               env_extra="HF_INCLUDE=*.safetensors,*.json\n")
    assert pytester.runpytest(*BASE).ret == 0
    folder = latest(pytester)
    block = handoff_block(folder)
    assert block["NEXT_COMMAND"].endswith("benchmarks/ --model org/tiny-model --env-file test.env")
    assert block["CURRENT_PHASE"].startswith("done")
    assert block["DO_NOT_REPEAT"] == ",".join(FULL_ORDER_2)
    row = json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"]
    assert row["status"] == "active" and row["instance_id"] == "org--tiny-model"  # the guide's org--name
    # the first green run's counts are observed, not yet expectations
    assert "expected_safetensors" not in row and "expected_gguf" not in row and "hub_commit" not in row
    assert row["observed"] == {"hub_commit": "a" * 40, "safetensors": 3, "gguf": 0, "files": 7,
                               "total_size_bytes": 5_000_000_000, "shard_pattern": "model-*-of-00003.safetensors",
                               "required_files": ["config.json", "tokenizer.json"], "runs": [folder.name],
                               "agreeing_runs": 1}
    assert row["total_size_bytes"] == 5_000_000_000 and row["disk_threshold_gb"] == 6.5
    assert row["include"] == ["*.safetensors", "*.json"] and row["topology"] == "2 nodes, MlxRing/Pipeline"
    update = [r for r in jsonl(folder) if r["event"] == "profile_update"]
    assert update and update[0]["diff"]["instance_id"] == {"old": None, "new": "org--tiny-model"}
    assert "observed on hub commit aaaaaaaaaaaa: 3 safetensors, 0 gguf, 7 files" in update[0]["said"][0]
    assert (row["sharding"], row["instance_meta"]) == ("Pipeline", "MlxRing")
    assert "profile updated: profile of org/tiny-model: observed on hub commit" in (folder / "handoff.md").read_text()
    assert row["notes"].startswith("first green bootstrap ")
    # The rerun of one gate right after it reuses every upstream pass: an observation changes no fingerprint.
    trace(pytester)
    assert pytester.runpytest(*BASE, "-k", "transport").ret == 0
    assert trace(pytester) == ["transport"]
    assert json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"] == row
    # A second green run on the same hub commit that agrees makes them the expectations.
    assert pytester.runpytest(*BASE).ret == 0
    row = json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"]
    assert (row["expected_safetensors"], row["expected_gguf"], row["expected_files"]) == (3, 0, 7)
    assert row["hub_commit"] == "a" * 40 and row["shard_pattern"] == "model-*-of-00003.safetensors"
    assert row["observed"]["agreeing_runs"] == 2 and row["required_files"] == ["config.json", "tokenizer.json"]
    said = [r for r in jsonl(latest(pytester)) if r["event"] == "profile_update"][0]["said"]
    assert "confirmed by a second green run on hub commit aaaaaaaaaaaa: now expected" in said[0]
    # A third changes nothing (and keeps the notes).
    assert pytester.runpytest(*BASE).ret == 0
    assert json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"] == row
    assert not [r for r in jsonl(latest(pytester)) if r["event"] == "profile_update"]
    # A re-upload (new hub commit) with another shard count: observed anew and said so; --update-profile sets it.
    set_facts(pytester, {**default_facts(), "hub_commit": "b" * 40})
    set_behaviour(pytester, {"node1_verify:notes": {**notes, "safetensors_count": 4}})
    assert pytester.runpytest(*BASE).ret == 0
    warnings = [r["text"] for r in jsonl(latest(pytester)) if r["event"] == "warning"]
    assert any("new hub commit bbbbbbbbbbbb (the profile's was aaaaaaaaaaaa)" in w for w in warnings), warnings
    newer = json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"]
    assert newer["expected_safetensors"] == 3 and newer["observed"]["safetensors"] == 4
    assert pytester.runpytest(*BASE, "--update-profile").ret == 0
    newer = json.loads((pytester.path / "profiles.json").read_text())["models"]["org/tiny-model"]
    assert newer["expected_safetensors"] == 4 and newer["hub_commit"] == "b" * 40


def test_ledger_html_has_handoff_started_column_and_environment(pytester):
    make_suite(pytester, behaviour={"parity": "fail:node2 lacks model-00003.safetensors <script>"})
    pytester.runpytest(*BASE)
    html = (latest(pytester) / "ledger.html").read_text()
    assert "modeldrop-handoff" in html and "NEXT_COMMAND: " in html
    assert 'data-column-type="started"' in html and 'data-column-type="gate"' in html
    assert "org/tiny-model" in html and "Hub commit" in html and "exo version" in html
    assert "<script>" not in html.split("modeldrop-handoff")[1].split("</div>")[0]
    assert "transcript" in html  # evidence extras


def test_no_token_in_any_ledger_file(pytester):
    make_suite(pytester, env_extra=f"HF_TOKEN={TOKEN}\n",
               behaviour={"node1_download": f"fail:401 for token {TOKEN}"})
    pytester.runpytest(*BASE)
    folder = latest(pytester)
    for name in ("ledger.html", "ledger.jsonl", "handoff.md", "run.json"):
        assert TOKEN not in (folder / name).read_text(), name
    assert TOKEN not in (pytester.path / "reports" / "pass_cache.json").read_text()


BENCH = '''
import pytest

@pytest.mark.bench("token_sweep")
@pytest.mark.parametrize("n", [1, 2])
def test_sweep(n, evidence):
    evidence.note("tps", 10.0 * n)
    assert n == 1, "decode stalled at request 3"
'''


def test_benchmark_run_has_its_own_handoff(pytester):
    make_suite(pytester)
    pytester.makeini("[pytest]\nmarkers =\n    bench(phase): a benchmark case\n")
    pytester.makepyfile(**{"benchmarks/test_bench": BENCH})
    pytester.runpytest("benchmarks", "--model", "org/tiny-model", "--env-file", "test.env")
    folder = latest(pytester)
    block = handoff_block(folder)
    assert block["CURRENT_PHASE"] == "benchmarks"
    assert block["KNOWN_BLOCKER"] == "benchmark test_sweep[2] (failed): decode stalled at request 3"
    # the failed case's phase is measured again: a gate or benchmarks/ with a phase, never a list of cases
    assert block["NEXT_COMMAND"].endswith("benchmarks/ --model org/tiny-model --env-file test.env -k sweep "
                                          "--rerun-benchmarks")
    text = (folder / "handoff.md").read_text()
    assert "BENCHMARKS (bootstrap gates not run in this session): 1 passed, 1 failed" in text
    assert [r["item"] for r in jsonl(folder) if r["event"] == "bench"] == ["test_sweep[1]", "test_sweep[2]"]


def test_benchmarks_do_not_run_after_a_failed_gate(pytester):
    make_suite(pytester, behaviour={"chat": "fail:no choices in the answer"})
    pytester.makeini("[pytest]\nmarkers =\n    bench(phase): a benchmark case\n")
    pytester.makepyfile(**{"benchmarks/test_bench": BENCH})
    result = pytester.runpytest("gates", "benchmarks", "--model", "org/tiny-model", "--env-file", "test.env", "-rs")
    result.stdout.fnmatch_lines(["SKIPPED*blocked by chat (failed): no choices in the answer"])
    bench = {r["item"]: r["outcome"] for r in jsonl(latest(pytester)) if r["event"] == "bench"}
    assert bench == {"test_sweep[1]": "skipped", "test_sweep[2]": "skipped"}


def test_evidence_from_setup_and_teardown_reaches_ledger_html(pytester):
    make_suite(pytester, nodes="studio1")
    pytester.makepyfile(**{"gates/test_c_phases": '''
import pytest

@pytest.fixture
def cluster(evidence):
    evidence.text("setup transcript", "launched exo on node1")
    yield
    evidence.json("teardown state", {"runners": "stopped"})

@pytest.fixture
def broken(evidence):
    evidence.text("setup failure transcript", "ssh: connect to host studio1 port 22: refused")
    raise RuntimeError("cannot reach node1")

@pytest.mark.gate("startup")
def test_startup_phases(cluster):
    pass

@pytest.mark.gate("cluster")
def test_cluster_broken(broken):
    pass
'''})
    pytester.runpytest(*BASE)
    html = (latest(pytester) / "ledger.html").read_text()
    for name in ("startup: setup transcript", "startup: teardown state", "cluster: setup failure transcript"):
        assert name in html, name
    fail = next(r for r in jsonl(latest(pytester)) if r["event"] == "fail")
    assert fail["gate"] == "cluster" and fail["reason"] == "RuntimeError: cannot reach node1"


def test_benchmark_next_command_keeps_the_bench_shape(pytester):
    make_suite(pytester)
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace('"fixtures.ledger"]', '"fixtures.ledger", "fixtures.bench"]'))
    pytester.makepyfile(**{"benchmarks/test_bench": BENCH})
    pytester.runpytest("benchmarks", "--model", "org/tiny-model", "--env-file", "test.env",
                       "--bench-profile", "short", "--bench-node=1")
    block = handoff_block(latest(pytester))
    assert block["NEXT_COMMAND"].endswith("benchmarks/ --model org/tiny-model --env-file test.env "
                                          "--bench-profile short --bench-node=1 -k sweep --rerun-benchmarks"), block


def test_timeline_drawn_for_a_failed_run_with_every_gate_that_ran(pytester):
    """plots/timeline.png (+ the spans drawn, timeline.json) after a failing run: every gate that started is
    a bar with its outcome, and ledger.html embeds the picture."""
    make_suite(pytester, behaviour={"node2_verify": "fail:1 shard truncated"})
    assert pytester.runpytest(*BASE).ret == 1
    run = latest(pytester)
    png, drawn = run / "plots" / "timeline.png", run / "plots" / "timeline.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    started = [r["gate"] for r in jsonl(run) if r["event"] == "gate_start"]
    bars = {s["label"]: s["outcome"] for s in json.loads(drawn.read_text())}
    assert started and set(started) <= set(bars), (started, bars)
    assert bars["node2_verify"] == "failed" and bars["preflight"] == "passed"
    assert bars.get("parity") == "skipped"
    assert 'class="modeldrop-timeline"' in (run / "ledger.html").read_text()


def test_timeline_spans_downloads_and_running_gates():
    from modeldrop.ledger.timeline import spans
    recs = [{"event": "gate_start", "gate": "node1_download", "t": 10.0},
            {"event": "download_start", "node": "node1", "start": 10.1, "t": 10.1},
            {"event": "download_start", "node": "node2", "start": 10.2, "t": 10.2},
            {"event": "download_end", "node": "node1", "start": 10.1, "end": 30.0, "rc": 0, "t": 30.0},
            {"event": "pass", "gate": "node1_download", "t": 30.1, "duration_s": 20.1},
            {"event": "download_end", "node": "node2", "start": 10.2, "end": 31.0, "rc": 1, "t": 31.0},
            {"event": "gate_start", "gate": "node1_verify", "t": 30.2}]
    got = {s.label: (s.start, s.end, s.outcome) for s in spans(recs, now=40.0)}
    assert got["node1 hf download"] == (10.1, 30.0, "download")
    assert got["node2 hf download"] == (10.2, 31.0, "download_failed")
    assert got["node1_download"] == (10.0, 30.1, "passed")
    assert got["node1_verify"] == (30.2, 40.0, "running")


def test_timeline_picture_draws_each_bar_where_its_span_is(tmp_path):
    """The PNG has a row per span, each bar in its outcome's colour at its place on the seconds axis; a running
    gate's bar is hatched (its colour and white stripes); a longer run gets a rounder tick step."""
    from PIL import Image

    from modeldrop.ledger import timeline as tl
    recs = [{"event": "gate_start", "gate": "preflight", "t": 100.0},
            {"event": "pass", "gate": "preflight", "t": 110.0, "duration_s": 10.0},
            {"event": "gate_start", "gate": "node1_verify", "t": 110.0},
            {"event": "fail", "gate": "node1_verify", "t": 115.0, "duration_s": 5.0},
            {"event": "gate_start", "gate": "chat", "t": 115.0}]
    path = tl.render(recs, tmp_path / "timeline.png", now=120.0)
    img = Image.open(path).convert("RGB")
    assert img.height == tl.TITLE_PX + 3 * tl.ROW_PX + tl.AXIS_PX
    left = img.width - 60 - tl.BAR_AREA_PX  # where 0 s is: the labels' column ends there
    x_at = lambda t: left + round(t * tl.BAR_AREA_PX / 20.0)  # noqa: E731
    row_mid = lambda i: tl.TITLE_PX + i * tl.ROW_PX + tl.ROW_PX // 2  # noqa: E731
    hexa = lambda rgb: "#{:02x}{:02x}{:02x}".format(*rgb)  # noqa: E731
    assert hexa(img.getpixel((x_at(5.0), row_mid(0)))) == tl.COLOURS["passed"]
    assert hexa(img.getpixel((x_at(12.5), row_mid(1)))) == tl.COLOURS["failed"]
    assert hexa(img.getpixel((x_at(5.0), row_mid(1)))) != tl.COLOURS["failed"]  # nothing before its start
    running = {hexa(img.getpixel((x, row_mid(2)))) for x in range(x_at(16.0), x_at(19.0))}
    assert {tl.COLOURS["running"], "#ffffff"} <= running
    assert [tl._nice_step(s) for s in (0.5, 8, 20, 95, 3600)] == [0.1, 1, 5, 20, 500]
    assert tl.render([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_the_ledger_alone_changes_gate_run_state(tmp_path):
    """Outcome, root cause, failing items and deselection change only through Ledger methods, each with its
    ledger.jsonl record; the plugin never reaches into `ledger.state` or `ledger.jsonl`."""
    import ast
    from pathlib import Path

    from modeldrop.ledger import GateRecord, Ledger, RunState
    from modeldrop.ledger.runfolder import RunFolder

    order = ["preflight", "node1_download", "node1_verify"]
    state = RunState(run_id="r", started=0.0, model_id="org/m", nodes=["local"], model_dirs=["/m"], command=[],
                     base_argv=["pytest"], bench_argv=["pytest"], order=order, gates={g: GateRecord(g) for g in order})
    ledger = Ledger(RunFolder.create(tmp_path, "org--m"), state)
    ledger.deselect(["preflight"])
    ledger.gate_start("node1_download")
    ledger.item_failed("node1_download", "gates/t.py::test_d", "call")
    assert ledger.failed_gates() == ["node1_download"] and ledger.outcome("node1_download") is None
    ledger.gate_result("node1_download", "failed", "rc 1", root=("node1_download", "failed", "rc 1"))
    ledger.gate_result("node1_verify", "skipped", "blocked by node1_download (failed): rc 1",
                       root=ledger.root_cause("node1_download"))
    assert ledger.outcome("preflight") is None and ledger.outcome("node1_download") == "failed"
    assert ledger.root_cause("node1_verify") == ("node1_download", "failed", "rc 1")
    assert ledger.first_bad_gate() == "node1_download"
    events = [(r["event"], r.get("gate"), r.get("gates")) for r in jsonl(ledger.folder.path)]
    assert events[:2] == [("deselect", None, ["preflight"]), ("gate_start", "node1_download", None)]
    assert ("item_fail", "node1_download", None) in events
    assert json.loads((ledger.folder.path / "run.json").read_text())["gates"]["preflight"]["outcome"] == "deselected"
    plugin = Path(__file__).resolve().parents[3] / "modeldrop" / "plugin"
    assert len(list(plugin.glob("*.py"))) >= 10, plugin  # the scan reads the plugin, not an empty folder
    reaches = [f"{p.name}:{n.lineno}" for p in sorted(plugin.glob("*.py")) for n in ast.walk(ast.parse(p.read_text()))
               if isinstance(n, ast.Attribute) and n.attr in ("state", "jsonl")
               and "ledger" in ast.unparse(n.value).lower()]
    assert reaches == []
