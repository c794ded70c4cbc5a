"""ledger.html, pytest-metadata's environment table and the profile row of a green bootstrap."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from modeldrop import profiles, serving
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
    """The descriptive profile fields of a green bootstrap (what it ran with; sizes from the gates' notes, this run
    or reused); the counts are `profile_observation`'s."""
    notes = gs.ledger.notes()
    row: dict[str, Any] = {}
    if gs.cfg.include:
        row["include"] = list(gs.cfg.include)
    if gs.cfg.exclude:
        row["exclude"] = list(gs.cfg.exclude)
    if _whole(notes.get("total_size_bytes")):
        row["total_size_bytes"] = notes["total_size_bytes"]
        row["disk_threshold_gb"] = round((row["total_size_bytes"] * 1.10 + 1e9) / 1e9, 1)
    row["instance_id"] = gs.cfg.instance_id
    row["sharding"], row["instance_meta"] = gs.cfg.sharding, gs.cfg.instance_meta
    row["topology"] = topology_note(gs)
    row.update(synch_flag_field(notes))
    if not (gs.cfg.profile or {}).get("notes"):  # never overwrite an operator's notes
        row["notes"] = (f"first green bootstrap {gs.folder.run_id} on {len(gs.cfg.nodes)} node(s), "
                        f"{dur(time.time() - gs.ledger.started)}")
    row["status"] = "active"
    row.update(serving.profile_fields(gs.ledger.serving_verdict_block()))
    return row


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def profile_observation(gs: GateSession) -> dict[str, Any] | None:
    """What this green bootstrap measured of the files (node 1's verify notes, the hub commit), or None when no
    verify gate ran in this session (their passes were reused: nothing new was measured)."""
    verify = [g for g in gs.order if g.endswith("_verify")]
    if not any(gs.ledger.outcome(g) == "passed" for g in verify):
        return None
    notes = gs.ledger.notes()
    hub = _hub_commit(gs)
    obs = {"hub_commit": hub if hub and re.fullmatch(r"[0-9a-f]{40}", str(hub)) else None,
           "safetensors": notes.get("safetensors_count"), "gguf": notes.get("gguf_count"),
           "files": notes.get("file_count"), "total_size_bytes": notes.get("total_size_bytes"),
           "shard_pattern": notes.get("shard_pattern"), "required_files": notes.get("required_files"),
           "run": gs.folder.run_id}
    for key in ("safetensors", "gguf", "files", "total_size_bytes"):
        obs[key] = obs[key] if _whole(obs[key]) else None
    return obs


def topology_note(gs: GateSession) -> str:
    """`2 nodes, MlxRing/Pipeline; node1 Mac16,9 128 GB macOS 26.1 at 169.254.10.1; node2 …` from each node's
    facts (those that cannot be read are left out)."""
    parts = [f"{len(gs.cfg.nodes)} node{'s' if len(gs.cfg.nodes) > 1 else ''}, "
             f"{gs.cfg.instance_meta}/{gs.cfg.sharding}"]
    for n in gs.cfg.nodes:
        try:
            f = gs.pool.get(n.index).facts() if gs.pool is not None else None
        except Exception:  # noqa: BLE001 - a note, not a verdict: a node that cannot say is left out
            f = None
        if not f:
            continue
        mem = f"{round(f['memory_bytes'] / 2**30)} GB" if f.get("memory_bytes") else None
        osv = (f"macOS {f['os_version']}" if f.get("platform") == "darwin" else f.get("os_version"))
        words = [w for w in (f.get("hw_model") or f.get("machine"), mem, osv) if w]
        at = f" at {f['ssh_server_addr']}" if f.get("ssh_server_addr") else ""
        parts.append(f"{n.name} {' '.join(words)}{at}")
    return "; ".join(parts)
def synch_flag_field(notes: dict[str, Any]) -> dict[str, Any]:
    """The profile's `exo_synch_flag`: what the startup gate recorded the cluster ran with (EXO_SYNCH_FLAG)."""
    flags = notes.get("exo synch flag")
    return {"exo_synch_flag": flags[0]} if isinstance(flags, list) and len(flags) == 1 else {}


def config_value(gs: GateSession, key: str) -> Any:
    """A resolved config value (None when unset)."""
    return effective(gs.cfg, key, None)


def profile_update(gs: GateSession) -> None:
    """After a fully green bootstrap: the model's profile as the guide keeps it (`profiles.after_green_bootstrap`:
    a new row, counts observed, confirmed by a second agreeing run, a new hub commit said); what changed is a
    `profile_update` record, what a kept row has otherwise and a new hub commit are warnings."""
    try:
        path = profiles.row_file(gs.cfg.profile_path, gs.cfg.profile_seed, gs.cfg.model_id)
        out = profiles.after_green_bootstrap(path, gs.cfg.model_id, profile_row_updates(gs),
                                             observation=profile_observation(gs), rewrite=gs.cfg.update_profile,
                                             read_only=path == gs.cfg.profile_seed and not gs.cfg.update_profile)
        if out.written:
            gs.ledger.profile_update(str(path), out.diff, out.said)
        for line in out.warnings:
            gs.ledger.warning(line)
        if out.differences:
            gs.ledger.warning(profiles.differences_line(path, gs.cfg.model_id, out.differences))
    except Exception as e:  # noqa: BLE001 - the bootstrap stays green; the ledger says why
        gs.ledger.warning(f"profile not updated: {type(e).__name__}: {one_line(e, 200)}")
