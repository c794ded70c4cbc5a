"""ledger.html, pytest-metadata's environment table and the profile row of a green bootstrap."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from modeldrop import profiles
from modeldrop.config import effective
from modeldrop.ledger import html as lhtml
from modeldrop.ledger.handoff import dur, one_line
from modeldrop.plugin import html_adapter
from modeldrop.plugin.session import GateSession


def prefix_updater(gs: GateSession) -> Any:
    """A function that puts the current hand-off block at the top of a summary prefix."""
    def update(prefix: list[str]) -> None:
        prefix[:] = [p for p in prefix if 'class="modeldrop-handoff"' not in p]
        prefix.insert(0, gs.ledger.summary_html())
    return update


def setup_html(config: pytest.Config, gs: GateSession) -> bool:
    """ledger.html in the run folder (unless --html was given), self-contained; False without pytest-html."""
    if not config.pluginmanager.hasplugin("html") or not hasattr(config.option, "htmlpath"):
        return False
    html_adapter.check_supported()
    if not config.option.htmlpath:
        config.option.htmlpath = str(gs.folder.path / "ledger.html")
        config.option.self_contained_html = True
        css = gs.folder.write_text("ledger.css", lhtml.LEDGER_CSS)
        config.option.css = [*(getattr(config.option, "css", None) or []), str(css)]
    return True


def start_html(config: pytest.Config, gs: GateSession) -> None:
    """At session start: find pytest-html's report and make its writes atomic and redacted."""
    gs.html_report = html_adapter.find_report(config)
    html_adapter.install_writer(gs.html_report, lambda path: lhtml.atomic_writer(path, gs.secrets))


def refresh_html(config: pytest.Config, gs: GateSession, regenerate: bool = False) -> None:
    """Put the current hand-off block at the top of the HTML ledger; `regenerate` rewrites it now (at a
    gate's start, so a run killed inside the gate leaves a ledger.html that names it)."""
    if gs.html_report is not None:
        html_adapter.set_prefix(gs.html_report, prefix_updater(gs), regenerate)


def after_item(config: pytest.Config, gs: GateSession) -> None:
    """After an item's last phase: refresh the ledger; rewrite ledger.html now unless pytest-html does
    (its `generate_report_on_test` ini), so a killed run leaves a current ledger either way."""
    refresh_html(config, gs, regenerate=not config.getini("generate_report_on_test"))


def update_metadata(config: pytest.Config, gs: GateSession) -> None:
    """Model, hub commit, nodes, exo versions, dirs, options in pytest-metadata's table."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    md = config.stash.get(metadata_key, None)
    if md is not None:
        md.update(environment_table(gs))


def environment_table(gs: GateSession) -> dict[str, Any]:
    """The environment rows of ledger.html (secrets redacted)."""
    cfg = gs.cfg
    exo: dict[str, Any] = {}
    for p in gs.parts.values():
        exo.update({k: v for k, v in (p.get("exo_versions") or {}).items() if v})
    return {
        "modeldrop run": gs.folder.run_id,
        "Model": cfg.model_id,
        "Hub commit": _hub_commit(gs) or "unknown yet",
        "Nodes": {n.name: n.target for n in cfg.nodes},
        "Model dirs": {n.name: n.model_dir for n in cfg.nodes},
        "exo version": exo or "unknown yet",
        "Env file": str(cfg.env_file) if cfg.env_file else "none",
        "Options": {k: v for k, v in cfg.redacted().items() if k != "nodes" and v not in (None, "")},
    }


def _hub_commit(gs: GateSession) -> str | None:
    return next((p.get("hub_commit") for p in gs.parts.values() if p.get("hub_commit")), None)


def profile_row_updates(gs: GateSession) -> dict[str, Any]:
    """The profile row fields a green bootstrap measured (from the gates' notes, this run or reused)."""
    notes = gs.ledger.notes()
    row: dict[str, Any] = {}
    if gs.cfg.include:
        row["include"] = list(gs.cfg.include)
    for note_key, field_name in (("safetensors_count", "expected_safetensors"), ("gguf_count", "expected_gguf"),
                                 ("total_size_bytes", "total_size_bytes")):
        if isinstance(notes.get(note_key), int) and not isinstance(notes.get(note_key), bool):
            row[field_name] = notes[note_key]
    row["instance_id"] = gs.cfg.instance_id
    if "total_size_bytes" in row:
        row["disk_threshold_gb"] = round((row["total_size_bytes"] * 1.10 + 1e9) / 1e9, 1)
    hub = _hub_commit(gs)
    if hub and re.fullmatch(r"[0-9a-f]{40}", str(hub)):
        row["hub_commit"] = hub
    row["sharding"], row["instance_meta"] = gs.cfg.sharding, gs.cfg.instance_meta
    if not (gs.cfg.profile or {}).get("notes"):  # never overwrite an operator's notes
        row["notes"] = (f"first green bootstrap {gs.folder.run_id} on {len(gs.cfg.nodes)} node(s), "
                        f"{dur(time.time() - gs.ledger.started)}")
    row["status"] = "active"
    return row


def config_value(gs: GateSession, key: str) -> Any:
    """A resolved config value (None when unset)."""
    return effective(gs.cfg, key, None)


def profile_update(gs: GateSession) -> None:
    """After a fully green bootstrap: write the model's profile row once (or on --update-profile); later runs
    report what they measured differently as a warning."""
    try:
        path = profiles.row_file(gs.cfg.profile_path, gs.cfg.profile_seed, gs.cfg.model_id)
        diff, written = profiles.after_green_bootstrap(path, gs.cfg.model_id, profile_row_updates(gs),
                                                       rewrite=gs.cfg.update_profile)
        if diff and written:
            gs.ledger.profile_update(str(path), diff)
        elif diff:
            gs.ledger.warning(profiles.differences_line(path, gs.cfg.model_id, diff))
    except Exception as e:  # noqa: BLE001 - the bootstrap stays green; the ledger says why
        gs.ledger.warning(f"profile not updated: {type(e).__name__}: {one_line(e, 200)}")
