"""The hub's HTTP server: routes the Hub API `hf download` uses, applies the fault switches, logs requests.

Contract: `HubServer(repos, host, port, log)` serves the repos of `RepoStore(repos)` (endpoints in
sandbox/hub/__init__.py); the fault switches are replaced as a whole (`set_faults`, `POST
/_sandbox/faults`); every request is appended as one JSON line to the request log; `GET /_sandbox/health`
answers `ok`, the pid and `code_hash()`, so a caller can tell a hub running other code.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.hub.faults import Faults, matches, take
from sandbox.hub.links import Pacer, client_key, link_rates
from sandbox.hub.repos import RepoFile, RepoStore, Snapshot, model_info, paths_info, tree

CHUNK = 64 * 1024
STALL_HOLD_S = 600.0  # the longest a stall_body fault holds a connection silent


def code_hash() -> str:
    """A hash of the hub's source: a running hub with other code gets restarted by start_hub."""
    sources = sorted(Path(__file__).resolve().parent.glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]


CODE_HASH = code_hash()


class HubServer(ThreadingHTTPServer):
    """The HTTP server; holds the store, the faults, the link pacer and the request log."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, repos_dir: Path, host: str, port: int, log_path: Path | None = None):
        self.store = RepoStore(repos_dir)
        self.faults = Faults()
        self.pacer = Pacer()
        self.lock = threading.RLock()
        self.log_path = Path(log_path) if log_path else None
        self._log_file = open(self.log_path, "a", buffering=1, encoding="utf-8") if self.log_path else None
        super().__init__((host, port), HubHandler)

    def log_request_record(self, rec: dict[str, Any]) -> None:
        """Append one JSON line to the request log."""
        if self._log_file:
            with self.lock:
                self._log_file.write(json.dumps(rec) + "\n")

    def take_fault(self, name: str, scope: str | None = None, path: str | None = None,
                   client: str = "") -> dict | None:
        """The active fault `name` if it applies to this request (and client); counts down its `times`."""
        with self.lock:
            return take(self.faults, name, scope, path, client)

    def set_faults(self, obj: dict[str, Any]) -> Faults:
        """Replace every fault switch."""
        faults = Faults.from_json(obj)
        with self.lock:
            self.faults = faults
        return faults

    def server_close(self) -> None:
        super().server_close()
        if self._log_file:
            self._log_file.close()


class HubHandler(BaseHTTPRequestHandler):
    """One request. Routes by path; see the module docstring for the endpoints."""

    protocol_version = "HTTP/1.1"
    server: HubServer
    body: bytes = b""
    server_version = "modeldrop-sandbox-hub/1"

    # -- plumbing ------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the JSON request log replaces stderr chatter

    @property
    def client(self) -> str:
        """Who is asking: the user owning the connecting socket (each sandbox node has its own), else its address."""
        if getattr(self, "_client", None) is None:
            self._client = client_key(self.client_address, self.server.server_address)
        return self._client

    def _record(self, status: int, sent: int, note: str = "", t0: float | None = None) -> None:
        rec = {"t": round(time.time(), 3), "client": self.client_address[0], "node": self.client,
               "method": self.command, "path": self.path, "status": status, "bytes": sent,
               "range": self.headers.get("Range"), "note": note}
        if t0 is not None:
            rec["body_s"] = round(time.monotonic() - t0, 3)
        self.server.log_request_record(rec)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              ctype: str = "application/json", note: str = "") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self._record(status, len(body) if self.command != "HEAD" else 0, note)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, msg: str, headers: dict[str, str] | None = None,
               note: str = "") -> None:
        h = {"X-Error-Message": msg, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._send(status, json.dumps({"error": msg}).encode(), h, note=note or code or "")

    def _status_faults(self, scope: str) -> bool:
        """Answer with an injected 429/500 when one applies; True when answered."""
        f = self.server.take_fault("rate_limit_429", scope, client=self.client)
        if f:
            self._error(429, None, "Too Many Requests (sandbox fault rate_limit_429)",
                        {"Retry-After": str(f["retry_after"])}, note="fault:rate_limit_429")
            return True
        f = self.server.take_fault("server_error_500", scope, client=self.client)
        if f:
            self._error(500, None, "Internal Error (sandbox fault server_error_500)", note="fault:server_error_500")
            return True
        return False

    def _parts(self) -> tuple[list[str], dict[str, list[str]]]:
        u = urlsplit(self.path)
        return [unquote(p) for p in u.path.split("/")[1:]], parse_qs(u.query)

    def _snapshot(self, org: str, name: str, rev: str | None) -> Snapshot | None:
        """The snapshot for a revision, or None after answering 404."""
        snap = self.server.store.snapshot(f"{org}/{name}", self.server.faults.override_files)
        if snap is None:
            self._error(404, "RepoNotFound", f"Repository {org}/{name} not found")
            return None
        if rev not in (None, "main", snap.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", {"X-Repo-Commit": snap.commit})
            return None
        return snap

    # -- methods -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._route()

    def do_HEAD(self) -> None:  # noqa: N802
        self._route()

    def do_POST(self) -> None:  # noqa: N802
        self._route()

    def _route(self) -> None:
        try:
            # read a request body first, whatever the answer, so keep-alive stays in sync
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            parts, query = self._parts()
            if parts[:1] == ["_sandbox"]:
                return self._admin(parts[1:])
            if parts == ["api", "agent-harnesses"]:
                if not self._status_faults("all"):
                    self._json({"standardEnvVars": [], "harnesses": {}})
                return None
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api(parts[2], parts[3], parts[4:], query)
            if len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
                return self._resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]))
            self._error(404, None, f"Not found: {self.path}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _admin(self, parts: list[str]) -> None:
        if parts == ["health"]:
            return self._json({"ok": True, "pid": os.getpid(), "code": CODE_HASH,
                               "repos": self.server.store.repo_ids()})
        if parts == ["faults"] and self.command == "GET":
            return self._json(asdict(self.server.faults))
        if parts == ["faults"] and self.command == "POST":
            try:
                obj = json.loads(self.body or b"{}")
                faults = self.server.set_faults(obj)
            except (ValueError, TypeError) as e:
                return self._json({"error": str(e)}, 400)
            return self._json(asdict(faults))
        if parts[:1] == ["commit"] and len(parts) == 3:
            snap = self.server.store.snapshot(f"{parts[1]}/{parts[2]}", self.server.faults.override_files)
            return self._json({"commit": snap.commit if snap else None})
        self._error(404, None, f"unknown admin path {self.path}")

    def _api(self, org: str, name: str, rest: list[str], query: dict[str, list[str]]) -> None:
        if self.command == "POST" and rest[:1] == ["paths-info"] and len(rest) == 2:
            return self._paths_info(org, name, rest[1])
        if self.command not in ("GET", "HEAD"):
            return self._error(405, None, "method not allowed")
        if rest == [] or (rest[:1] == ["revision"] and len(rest) == 2):
            if self._status_faults("revision"):
                return None
            snap = self._snapshot(org, name, rest[1] if rest else None)
            if snap:
                self._json(model_info(snap, query.get("blobs", ["false"])[0] == "true"))
            return None
        if rest[:1] == ["tree"] and len(rest) >= 2:
            if self._status_faults("tree"):
                return None
            snap = self._snapshot(org, name, rest[1])
            if snap:
                recursive = query.get("recursive", ["false"])[0] == "true"
                self._json(tree(snap, "/".join(rest[2:]).strip("/"), recursive))
            return None
        self._error(404, None, f"Not found: {self.path}")

    def _paths_info(self, org: str, name: str, rev: str) -> None:
        if self._status_faults("tree"):
            return None
        form = parse_qs(self.body.decode())
        snap = self._snapshot(org, name, rev)
        if snap:
            self._json(paths_info(snap, form.get("paths", [])))
        return None

    def _resolve(self, org: str, name: str, rev: str, path: str) -> None:
        if self._status_faults("head" if self.command == "HEAD" else "get") or self._status_faults("resolve"):
            return None
        snap = self._snapshot(org, name, rev)
        if snap is None:
            return None
        f = snap.files.get(path)
        if f is None or matches(path, self.server.faults.missing_file):
            note = "fault:missing_file" if f else "EntryNotFound"
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"",
                               {"X-Repo-Commit": snap.commit}, note=note)
        start, end = 0, f.size
        status, extra = 200, {}
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            parsed = _parse_range(rng, f.size)
            if parsed is None:
                return self._error(416, None, f"bad range {rng}", {"Content-Range": f"bytes */{f.size}"})
            start, end = parsed
            status, extra = 206, {"Content-Range": f"bytes {start}-{end - 1}/{f.size}"}
        self.send_response(status)
        for k, v in {"X-Repo-Commit": snap.commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                     "Content-Type": "application/octet-stream", "Content-Length": str(end - start),
                     "Last-Modified": formatdate(snap.last_modified, usegmt=True), **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return self._record(status, 0)
        self._body(f, start, end, status)

    def _body(self, f: RepoFile, start: int, end: int, status: int) -> None:
        cut = self.server.take_fault("cut_body", path=f.path) if self.server.faults.cut_body else None
        stall = self.server.take_fault("stall_body", path=f.path) if self.server.faults.stall_body else None
        cut = cut or stall
        stop = start + int((end - start) * cut["fraction"]) if cut else end
        rates = link_rates(self.server.faults, self.client)
        bps = min(rates.values()) if rates else None
        sent, pos, t0, short = 0, start, time.monotonic(), False
        step = min(CHUNK, max(1024, bps // 20)) if bps else CHUNK
        while pos < stop:
            chunk = f.read(pos, min(stop, pos + step))
            if not chunk:  # a declared size beyond the bytes held: the body ends short, the connection with it
                short = True
                break
            self.server.pacer.pace(link_rates(self.server.faults, self.client), len(chunk))
            self.wfile.write(chunk)
            pos += len(chunk)
            sent += len(chunk)
        self.wfile.flush()
        held = time.monotonic() + STALL_HOLD_S
        while stall and self.server.faults.stall_body and time.monotonic() < held:
            time.sleep(0.1)  # silent, connection open: the client sees no byte and no end
        if cut or short:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        note = ("fault:stall_body" if stall else "fault:cut_body" if cut else "declared size: body ends short" if short
                else ("slow" if bps else ""))
        self._record(status, sent, note, t0)



def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=N-` / `bytes=N-M` / `bytes=-K` -> [start, end) within size, or None if invalid."""
    if not header.startswith("bytes=") or "," in header:
        return None
    a, _, b = header[6:].strip().partition("-")
    try:
        if a == "":
            start, end = max(0, size - int(b)), size
        else:
            start, end = int(a), (int(b) + 1 if b else size)
    except ValueError:
        return None
    end = min(end, size)
    return (start, end) if 0 <= start < end or (start == end == size == 0) else None

