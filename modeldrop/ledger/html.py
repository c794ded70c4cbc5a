"""pytest-html glue without pytest: extras dicts, table cells, and the hand-off block as HTML.

Contract:
- `text_extra`, `json_extra`, `png_extra`, `html_extra` return the dicts pytest-html 4.2 expects in
  `report.extras` (same shape as `pytest_html.extras.*`); text is capped at `MAX_TEXT` characters.
- `started_header()/started_cell(t)` and `gate_header()/gate_cell(g)` are the extra table columns.
- `summary_html(fields, state)` renders the Hand-off Block and the gate table; everything that may
  come from a node is passed through `html.escape`.
- `redact_report(report, secrets)` masks secrets in what pytest-html (and the terminal) take from a test
  report (the failure text, captured output, extras) before anything escapes, encodes or renders them.
- `atomic_writer(report_path, secrets)` replaces pytest-html's in-place write with an atomic one that
  masks secrets in every form they can take in the page (`secret_forms`: as is, HTML- and JSON-escaped and
  both), so a run killed mid-write still leaves the previous, readable ledger.html.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modeldrop.ledger.handoff import RunState, block_lines, dur, hm
from modeldrop.ledger.runfolder import atomic_write_text
from modeldrop.redaction import MASK, masked, redact, redact_obj

MAX_TEXT = 200_000


def _extra(content: Any, format_type: str, name: str | None, mime: str | None, ext: str | None) -> dict:
    return {"name": name, "format_type": format_type, "content": content, "mime_type": mime, "extension": ext}


def text_extra(content: str, name: str) -> dict:
    """A text attachment (capped; the cap is said in the text)."""
    if len(content) > MAX_TEXT:
        content = content[:MAX_TEXT] + f"\n… [{len(content) - MAX_TEXT} more characters in the run folder]"
    return _extra(content, "text", name, "text/plain", "txt")


def json_extra(obj: Any, name: str) -> dict:
    """A JSON attachment (pytest-html json.dumps it; we make it JSON-able first)."""
    return _extra(json.loads(json.dumps(obj, default=str)), "json", name, "application/json", "json")


def png_extra(data: bytes | str | Path, name: str) -> dict:
    """A PNG attachment from bytes or a file path, embedded as base64."""
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    return _extra(base64.b64encode(raw).decode("ascii"), "image", name, "image/png", "png")


def html_extra(content: str) -> dict:
    """A raw HTML attachment (caller escapes node text)."""
    return _extra(content, "html", None, None, None)


# pytest-html draws Title, Environment, Summary, results; this puts the Summary (whose prefix holds the
# hand-off block) right under the title, above the long environment table.
LEDGER_CSS = """
body { display: flex; flex-direction: column; }
body > #title, body > p { order: -2; }
body > .summary { order: -1; }
.modeldrop-handoff pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 8px; }
.modeldrop-gates td, .modeldrop-gates th { border: 1px solid #d0d7de; padding: 2px 6px; text-align: left; }
.modeldrop-gates { border-collapse: collapse; margin-bottom: 8px; }
"""


def started_header() -> str:
    return '<th class="sortable" data-column-type="started">Started</th>'


def started_cell(t: float | None) -> str:
    return (f'<td class="col-started">'
            f'{html.escape(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))) if t else ""}</td>')


def gate_header() -> str:
    return '<th class="sortable" data-column-type="gate">Gate</th>'


def gate_cell(gate: str | None) -> str:
    return f'<td class="col-gate">{html.escape(gate or "")}</td>'


def summary_html(fields: dict[str, str], state: RunState | None, timeline_png: Path | None = None) -> str:
    """The hand-off block, gate table and (when drawn) the timeline picture for the top of ledger.html
    (all text escaped; the picture embedded, so the ledger stays self-contained)."""
    e = html.escape
    block = "\n".join(block_lines(fields))
    out = ['<div class="modeldrop-handoff"><h2>Hand-off</h2>',
           f'<pre style="white-space:pre-wrap">{e(block)}</pre>']
    if state is not None:
        out.append('<table class="modeldrop-gates"><tr><th>gate</th><th>phase</th><th>outcome</th>'
                   '<th>started (UTC)</th><th>duration</th><th>evidence / reason</th><th>reused from</th></tr>')
        for r in state.in_order():
            detail = r.reason if r.outcome in ("failed", "skipped") else (r.evidence or r.reason)
            out.append(f"<tr><td>{e(r.gate)}</td><td>{e(r.phase)}</td><td>{e(r.outcome)}</td>"
                       f"<td>{e(hm(r.started))}</td><td>{e(dur(r.duration))}</td><td>{e(detail)}</td>"
                       f"<td>{e(r.reused_from)}</td></tr>")
        out.append("</table>")
        warnings = state.warnings + [f"{r.gate}: {w}" for r in state.in_order() for w in r.warnings]
        if warnings:
            out.append("<p><b>Warnings</b></p><ul>" + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul>")
    out.append(timeline_img(timeline_png))
    out.append("</div>")
    return "\n".join(out)


def timeline_img(png: Path | None) -> str:
    """The timeline picture as an embedded <img> ("" when not drawn yet)."""
    try:
        data = Path(png).read_bytes() if png else b""
    except OSError:
        data = b""
    if not data:
        return ""
    return ('<p><b>Timeline</b></p><img class="modeldrop-timeline" alt="timeline of the gates and downloads" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}"/>')


def _html_forms(s: str) -> set[str]:
    """s as html.escape writes it (quotes or not) and as Jinja/markupsafe does (`&#34;`, `&#39;`)."""
    plain = html.escape(s, quote=False)
    return {s, plain, html.escape(s), plain.replace('"', "&#34;").replace("'", "&#39;")}


def secret_forms(secret: str) -> set[str]:
    """Every form a secret takes in ledger.html: as is, HTML-escaped (pytest-html escapes captured logs), inside
    JSON strings (its data blob; ASCII-escaped or not), and HTML-escaped again (the blob sits in an attribute)."""
    out: set[str] = set()
    for first in _html_forms(secret):
        for js in (first, json.dumps(first)[1:-1], json.dumps(first, ensure_ascii=False)[1:-1]):
            out |= _html_forms(js)
    return out


def redact_report(report: Any, secrets: Iterable[str]) -> None:
    """Mask secrets in a pytest report's failure text, captured sections and text/json/html extras (in place)."""
    keep = masked(secrets)
    if not keep:
        return
    text = getattr(report, "longreprtext", "") or ""
    if any(s in text for s in keep):
        report.longrepr = _scrubbed(report.longrepr, keep)
    report.sections = [(head, redact(body, keep)) for head, body in getattr(report, "sections", [])]
    for extra in getattr(report, "extras", None) or []:
        if isinstance(extra, dict) and extra.get("format_type") in ("text", "json", "html", "url"):
            extra["content"] = redact_obj(extra.get("content"), keep)


def _scrubbed(obj: Any, keep: list[str], depth: int = 0) -> Any:
    """obj with secrets masked in every string inside it: strings, lists, tuples and the dataclasses pytest's
    failure representations are made of (changed in place, so their shape and `reprcrash` stay)."""
    if isinstance(obj, str):
        return redact(obj, keep)
    if depth > 12:
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_scrubbed(x, keep, depth + 1) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            try:
                object.__setattr__(obj, f.name, _scrubbed(getattr(obj, f.name), keep, depth + 1))
            except (AttributeError, TypeError):
                continue
    return obj


def atomic_writer(report_path: Path, secrets: Iterable[str] = ()) -> Callable[[str], None]:
    """A writer for pytest-html's rendered page that writes it atomically, every form of every secret masked."""
    forms = masked(f for s in masked(secrets) for f in secret_forms(s))

    def write(rendered: str) -> None:
        for form in forms:  # longest first: a form never leaves a piece of a longer one behind
            rendered = rendered.replace(form, MASK)
        atomic_write_text(report_path, rendered)
    return write
