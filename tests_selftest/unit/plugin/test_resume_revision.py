"""--resume-bootstrap after a change of --revision: the files of the old revision are not reused. The verify pass
holds the revision, so neither a download (which falls back to its verify pass) nor a verify is skipped."""

from __future__ import annotations

from modeldrop.config import load_config
from modeldrop.ledger.fingerprint import fingerprint_parts, gate_fingerprint
from tests_selftest.support.plugin_kit import BASE, jsonl, latest, make_suite, trace


class _Facts:
    def hub_commit(self):
        return "c0ffee"

    def exo_version(self, k):
        return "new:1.0"

    def manifest_digest(self, k):
        return f"digest-{k}"


def _cfg(tmp_path, revision: str):
    env = {"MODEL_ID": "org/m", "NODES": "u@h1,u@h2", "RUN_REPORT_DIR": str(tmp_path / "r"),
           "PROFILE_PATH": str(tmp_path / "none.json"), "HF_REVISION": revision}
    return load_config({}, environ=env)


def test_the_verify_fingerprint_holds_the_revision(tmp_path):
    main, other = _cfg(tmp_path, "main"), _cfg(tmp_path, "v2.0")
    for gate in ("node1_download", "node1_verify", "node2_verify"):
        assert gate_fingerprint(gate, main, _Facts()) != gate_fingerprint(gate, other, _Facts()), gate
    assert fingerprint_parts("node1_verify", other, _Facts())["options"]["hf_revision"] == "v2.0"


def test_resume_after_a_revision_change_downloads_and_verifies_again(pytester):
    make_suite(pytester)
    assert pytester.runpytest(*BASE).ret == 0
    trace(pytester)
    assert pytester.runpytest(*BASE, "--resume-bootstrap", "--revision", "v2.0").ret == 0
    ran = trace(pytester)
    # preflight runs again too: its serving verdict read the old revision's config.json and index
    assert ran[:3] == ["preflight", "node1_download", "node1_verify"] and "node2_download" in ran, ran
    why = next(r for r in jsonl(latest(pytester)) if r["event"] == "resume_from" and r["gate"] == "node1_download")
    assert "hf_revision=main (now v2.0)" in why["why"], why
    reused = [r["gate"] for r in jsonl(latest(pytester)) if r["event"] == "reuse"]
    assert reused == [], reused
