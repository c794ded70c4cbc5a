"""PassCache and fingerprints as plain Python: record/lookup/latest, age, atomic rewrite under a lock,
concurrent writers, corrupt files, and what changes a fingerprint."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from modeldrop.config import load_config
from modeldrop.ledger.fingerprint import digest, explain_change, fingerprint_parts, gate_fingerprint
from modeldrop.ledger.passcache import KEEP, PassCache


def test_record_lookup_latest(tmp_path):
    cache = PassCache(tmp_path / "pass_cache.json")
    assert cache.lookup("preflight", "fp1", 3600) is None and cache.latest("preflight") is None
    rec = cache.record("preflight", "fp1", "run-1", {"notes": {"k": 1}}, {"model_id": "org/m"})
    got = cache.lookup("preflight", "fp1", 3600)
    assert got == rec and got.summary == {"notes": {"k": 1}}
    assert cache.lookup("preflight", "fp2", 3600) is None
    cache.record("preflight", "fp2", "run-2", parts={"model_id": "org/m"})
    assert cache.latest("preflight").run_id == "run-2"
    assert cache.matching("preflight", "fp1").run_id == "run-1"
    assert cache.latest("preflight", model_id="org/other") is None


def test_age_limit(tmp_path):
    cache = PassCache(tmp_path / "c.json")
    cache.record("chat", "fp", "old-run", t=time.time() - 30 * 3600)
    assert cache.lookup("chat", "fp", 24 * 3600) is None
    assert cache.lookup("chat", "fp", 48 * 3600).run_id == "old-run"
    assert round(cache.matching("chat", "fp").age_s() / 3600) == 30


def test_atomic_and_bounded(tmp_path):
    cache = PassCache(tmp_path / "c.json")
    for i in range(KEEP + 5):
        cache.record("parity", f"fp{i}", f"run{i}")
    assert len(json.loads((tmp_path / "c.json").read_text())["passes"]["parity"]) == KEEP
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupt_file_is_an_empty_cache(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    cache = PassCache(tmp_path / "c.json")
    assert cache.latest("preflight") is None
    cache.record("preflight", "fp", "run")
    assert cache.lookup("preflight", "fp", 60) is not None


def test_malformed_gate_entries_are_left_out(tmp_path):
    good = {"gate": "parity", "fingerprint": "fp", "time": time.time(), "run_id": "r"}
    (tmp_path / "c.json").write_text(json.dumps({"passes": {"preflight": 5, "node1_verify": {"x": 1},
                                                            "parity": ["junk", good]}}))
    cache = PassCache(tmp_path / "c.json")
    assert cache.lookup("preflight", "fp", 60) is None and cache.latest("node1_verify") is None
    assert cache.lookup("parity", "fp", 60).run_id == "r"
    cache.record("preflight", "fp", "run")
    assert cache.lookup("preflight", "fp", 60) is not None and cache.latest("parity").run_id == "r"


def _writer(path: str, n: int, who: int) -> None:
    cache = PassCache(Path(path))
    for i in range(n):
        cache.record(f"gate{who}", f"fp{i}", f"run{who}-{i}")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "c.json")
    procs = [multiprocessing.Process(target=_writer, args=(path, 10, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    passes = json.loads(Path(path).read_text())["passes"]
    assert {g: len(rows) for g, rows in passes.items()} == {f"gate{w}": 10 for w in range(4)}


class Facts:
    def __init__(self, **kw):
        self.d = {"hub": "a" * 40, "exo": {1: "new:1", 2: "new:1"}, "man": {1: "d1", 2: "d2"}, **kw}

    def hub_commit(self):
        return self.d["hub"]

    def exo_version(self, k):
        return self.d["exo"].get(k)

    def manifest_digest(self, k):
        return self.d["man"].get(k)


def cfg(**cli):
    return load_config({"MODEL_ID": "org/m", "NODES": "studio1,studio2", **cli}, environ={},
                       env_file=None)


def test_fingerprint_scopes():
    base, facts = cfg(), Facts()
    changed_node2 = Facts(man={1: "d1", 2: "other"})
    assert gate_fingerprint("node1_verify", base, facts) == gate_fingerprint("node1_verify", base, changed_node2)
    assert gate_fingerprint("node2_verify", base, facts) != gate_fingerprint("node2_verify", base, changed_node2)
    assert gate_fingerprint("parity", base, facts) != gate_fingerprint("parity", base, changed_node2)
    new_exo = Facts(exo={1: "new:2", 2: "new:1"})
    assert gate_fingerprint("node1_verify", base, facts) == gate_fingerprint("node1_verify", base, new_exo)
    assert gate_fingerprint("chat", base, facts) != gate_fingerprint("chat", base, new_exo)
    assert gate_fingerprint("node1_verify", base, facts) != gate_fingerprint("node1_verify", cfg(FAST=True), facts)
    assert gate_fingerprint("node1_download", base, facts) == gate_fingerprint("node1_download", cfg(FAST=True), facts)
    tensor = cfg(EXO_SHARDING="Tensor")
    assert gate_fingerprint("placement", base, facts) != gate_fingerprint("placement", tensor, facts)
    assert gate_fingerprint("preflight", base, facts) != gate_fingerprint("preflight", cfg(MODEL_ID="org/n"), facts)


class SlowFacts(Facts):
    """Each node's exo answers only once every node was asked (as `exo --help` on N nodes at once)."""

    def __init__(self, n: int):
        super().__init__(exo={k: f"new:{k}" for k in range(1, n + 1)})
        self.met = threading.Barrier(n, timeout=10)

    def exo_version(self, k):
        self.met.wait()  # BrokenBarrierError when the nodes are asked one after another
        return super().exo_version(k)


def test_per_node_facts_are_asked_of_every_node_at_once():
    four = cfg(NODES="studio1,studio2,studio3,studio4")
    parts = fingerprint_parts("chat", four, SlowFacts(4))
    assert parts["exo_versions"] == {"node1": "new:1", "node2": "new:2", "node3": "new:3", "node4": "new:4"}


def test_fingerprint_has_no_secret():
    c = load_config({"MODEL_ID": "org/m", "NODES": "local"}, environ={"HF_TOKEN": "hf_secret_value"}, env_file=None)
    for gate in ("preflight", "node1_download", "node1_verify", "chat"):
        assert "hf_secret_value" not in json.dumps(fingerprint_parts(gate, c, Facts()))


def test_explain_change_words():
    old = fingerprint_parts("node2_verify", cfg(), Facts())
    new = fingerprint_parts("node2_verify", cfg(), Facts(man={1: "d1", 2: "x"}))
    assert explain_change(old, new) == "for other files on node2 (manifest changed)"
    new = fingerprint_parts("node2_verify", cfg(FAST=True), Facts())
    assert explain_change(old, new) == "with fast=False (now True)"
    assert explain_change(old, fingerprint_parts("node2_verify", cfg(), Facts(hub="b" * 40))).startswith(
        "for hub commit aaaaaaaaaaaa (now bbbbbbbbbbbb)")
    assert explain_change({}, new).startswith("for a fingerprint recorded without details")


def test_optional_exo_session_invalidates_cluster_gates_only():
    class WithSession(Facts):
        def exo_session(self, k):
            return self.d.get("sess", {}).get(k)

    before, after = WithSession(sess={1: "pid1@t0", 2: "pid2@t0"}), WithSession(sess={1: "pid9@t5", 2: "pid2@t0"})
    assert gate_fingerprint("chat", cfg(), before) != gate_fingerprint("chat", cfg(), after)
    assert gate_fingerprint("parity", cfg(), before) == gate_fingerprint("parity", cfg(), after)
    old, new = fingerprint_parts("startup", cfg(), before), fingerprint_parts("startup", cfg(), after)
    assert explain_change(old, new) == "for another exo session on node1 (exo restarted)"


def test_pass_cache_masks_secrets(tmp_path):
    token = "hf_abcdefghijklmnop"
    cache = PassCache(tmp_path / "pass_cache.json", [token])
    cache.record("node1_download", "fp", "run1", {"notes": {"warning": f"retried with {token}"}, "evidence": token},
                 {"options": {"hf_endpoint": f"https://x/?t={token}"}})
    text = (tmp_path / "pass_cache.json").read_text()
    assert token not in text and "retried with ***" in text
    assert cache.lookup("node1_download", "fp", 60).summary["evidence"] == "***"


@pytest.mark.parametrize("name,secret", [("HF_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWORD", True),
                                         ("ACCEPT_NEW_HOST_KEYS", False), ("PASS_MAX_AGE", False),
                                         ("EXO_API_PORT", False)])
def test_one_definition_of_a_secret(name, secret):
    from modeldrop.redaction import is_secret_name, redact, redact_mapping, secret_values
    assert is_secret_name(name) is secret
    values = {name: "s3cr3t-value", "MODEL_ID": "org/m"}
    assert (secret_values(values) == ["s3cr3t-value"]) is secret
    assert (redact_mapping(values)[name] == "***") is secret
    assert redact("a s3cr3t-value b", secret_values(values)) == ("a *** b" if secret else "a s3cr3t-value b")


def test_preflight_pass_is_not_reused_after_a_tool_python_or_margin_change():
    class WithTools(Facts):
        def tool_versions(self, k):
            return self.d.get("tools", {}).get(k, "hf 1.0; exo new:1; python /usr/bin/python3 3.9.6")

    base = fingerprint_parts("preflight", cfg(), WithTools())
    for changed in (cfg(HF_CMD="/usr/local/bin/hf"), cfg(EXO_CMD="/opt/exo/bin/exo"), cfg(DISK_MARGIN_GB=50)):
        assert digest(fingerprint_parts("preflight", changed, WithTools())) != digest(base)
    upgraded = fingerprint_parts("preflight", cfg(), WithTools(tools={2: "hf 1.1; exo new:1; python x 3.9.6"}))
    assert digest(upgraded) != digest(base)
    assert "for tool versions" in explain_change(base, upgraded) and "node2" in explain_change(base, upgraded)
    assert "for tools" in explain_change(base, fingerprint_parts("preflight", cfg(HF_CMD="/x/hf"), WithTools()))
    assert digest(fingerprint_parts("preflight", cfg(), WithTools())) == digest(base)  # nothing changed: reuse


def test_manifest_digest_changes_when_a_file_is_rewritten_at_the_same_size():
    from modeldrop.audit import manifest_digest
    files = [{"path": "model.safetensors", "size": 10, "mtime": 1700000000.25},
             {"path": ".cache/huggingface/x.lock", "size": 0, "mtime": 1.0}]
    touched = [dict(files[0], mtime=1700000999.0), files[1]]
    assert manifest_digest({"files": files}) != manifest_digest({"files": touched})
    cache_only = [files[0], dict(files[1], mtime=2.0)]
    assert manifest_digest({"files": files}) == manifest_digest({"files": cache_only})
