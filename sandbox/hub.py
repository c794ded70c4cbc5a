"""A fake Hugging Face hub for the real `hf download` CLI (HF_ENDPOINT), with fault switches.

Contract (the hub API `hf download` uses):
- Serves model repos from `<repos>/<org>/<name>/` (every file below it, `.git` excluded). A
  repo's commit sha is a stable 40-hex digest of its content (paths and blob ids), so editing
  the directory gives a new commit; `main` and that sha are the only revisions.
- Endpoints: `GET /api/agent-harnesses`; `GET /api/models/{o}/{n}[/revision/{rev}]`
  (`?blobs=true` adds sizes and lfs to siblings); `GET /api/models/{o}/{n}/tree/{rev}[/{path}]`
  (`recursive`, lfs blocks for *.safetensors/*.gguf/*.bin, git-blob sha1 oids); `POST
  /api/models/{o}/{n}/paths-info/{rev}`; `HEAD|GET /{o}/{n}/resolve/{rev}/{path}` with
  X-Repo-Commit, ETag (sha256 for lfs files, blob sha1 otherwise), Content-Length, Range -> 206.
  Errors are 404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound.
- Fault switches (`Faults`), replaced at runtime by `POST /_sandbox/faults` (JSON) or
  `HubHandle.set_faults(...)`; `GET /_sandbox/faults` reads them; `GET /_sandbox/health`.
- Every request is appended as one JSON line to the request log.
- `start_hub(...)` runs `python -m sandbox.hub` as its own process on the caller's loopback
  address and port, waits until it answers, and returns a `HubHandle`; `stop_hub(pid_file)`
  stops exactly that process (pid checked against /proc/<pid>/cmdline).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.procs import pid_matches, read_pid, stop_pid, wait_until

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".npz", ".mlpackage")
SCOPES = ("all", "revision", "tree", "resolve", "head", "get")
CHUNK = 64 * 1024
STALL_HOLD_S = 600.0  # the longest a stall_body fault holds a connection silent


def code_hash() -> str:
    """A hash of this module's source: a running hub with other code gets restarted by start_hub."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


CODE_HASH = code_hash()


# ----------------------------------------------------------------------------------------------
# content: files, oids, commit shas

def git_blob_sha1(data: bytes) -> str:
    """Git's blob id: sha1(b"blob <len>\\0" + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file the Hub stores for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class RepoFile:
    """One file of a snapshot; `data` is set for overridden files, else read from `source`."""

    path: str
    size: int
    blob_id: str
    sha256: str | None
    source: Path | None = None
    data: bytes | None = None

    @property
    def etag(self) -> str:
        """The ETag the Hub sends: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 or self.blob_id

    def tree_entry(self) -> dict[str, Any]:
        """The entry of this file in /tree (and paths-info)."""
        entry: dict[str, Any] = {"type": "file", "path": self.path, "size": self.size, "oid": self.blob_id}
        if self.sha256:
            ptr = lfs_pointer(self.sha256, self.size)
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(ptr)}
        return entry

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the content."""
        if self.data is not None:
            return self.data[start:end]
        with open(self.source, "rb") as f:  # type: ignore[arg-type]
            f.seek(start)
            return f.read(end - start)


def describe(path: str, data: bytes, source: Path | None = None, keep_data: bool = False) -> RepoFile:
    """A RepoFile for `data`: LFS by suffix (oid = blob id of the pointer)."""
    if path.endswith(LFS_SUFFIXES):
        sha = hashlib.sha256(data).hexdigest()
        return RepoFile(path, len(data), git_blob_sha1(lfs_pointer(sha, len(data))), sha, source,
                        data if keep_data else None)
    return RepoFile(path, len(data), git_blob_sha1(data), None, source, data if keep_data else None)


@dataclass
class Snapshot:
    """A repo at one commit."""

    repo_id: str
    commit: str
    files: dict[str, RepoFile]
    last_modified: float

    def dirs(self) -> set[str]:
        """Every folder that holds a file, e.g. {"a", "a/b"}."""
        out = set()
        for p in self.files:
            parts = p.split("/")[:-1]
            out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
        return out


def commit_of(files: dict[str, RepoFile]) -> str:
    """A stable commit sha for a file set."""
    text = "".join(f"{p}\0{f.blob_id}\n" for p, f in sorted(files.items()))
    return hashlib.sha1(b"modeldrop-sandbox-commit\n" + text.encode()).hexdigest()


class RepoStore:
    """Repos under `root/<org>/<name>/`; snapshots are cached until a file's stat changes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[tuple, Snapshot]] = {}

    def repo_ids(self) -> list[str]:
        """Every `org/name` with a folder."""
        if not self.root.is_dir():
            return []
        return sorted(f"{o.name}/{n.name}" for o in self.root.iterdir() if o.is_dir()
                      for n in o.iterdir() if n.is_dir())

    def _listing(self, repo_dir: Path) -> list[tuple[str, Path, int, int]]:
        out = []
        for dirpath, dirnames, filenames in os.walk(repo_dir):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                p = Path(dirpath, name)
                st = p.stat()
                out.append((p.relative_to(repo_dir).as_posix(), p, st.st_size, st.st_mtime_ns))
        return out

    def snapshot(self, repo_id: str, overrides: dict[str, str] | None = None) -> Snapshot | None:
        """The current snapshot of `repo_id` (None if unknown), with `overrides` path -> text."""
        repo_dir = self.root / repo_id
        if "/" not in repo_id or not repo_dir.is_dir():
            return None
        with self._lock:
            listing = self._listing(repo_dir)
            sig = tuple((p, s, m) for p, _, s, m in listing)
            cached = self._cache.get(repo_id)
            if cached is None or cached[0] != sig:
                files = {rel: describe(rel, src.read_bytes(), src) for rel, src, _, _ in listing}
                mtime = max((m for *_, m in listing), default=0) / 1e9
                cached = (sig, Snapshot(repo_id, commit_of(files), files, mtime))
                self._cache[repo_id] = cached
            snap = cached[1]
        if not overrides:
            return snap
        files = dict(snap.files)
        for path, text in overrides.items():
            files[path] = describe(path, text.encode(), keep_data=True)
        return Snapshot(repo_id, commit_of(files), files, snap.last_modified)


def publish(repos_dir: Path, repo_id: str, src_dir: Path) -> Path:
    """Copy the files of `src_dir` (top level and subfolders, no .cache) into the hub's repo dir.

    Files in the repo dir that `src_dir` lacks are removed, so the repo equals `src_dir`.
    """
    dest = Path(repos_dir) / repo_id
    dest.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for p in sorted(Path(src_dir).rglob("*")):
        rel = p.relative_to(src_dir)
        if p.is_file() and rel.parts[0] not in (".cache", ".git"):
            wanted.add(rel.as_posix())
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != p.read_bytes():
                shutil.copy2(p, target)
    for p in sorted(dest.rglob("*"), reverse=True):
        rel = p.relative_to(dest).as_posix()
        if p.is_file() and rel not in wanted:
            p.unlink()
    return dest


# ----------------------------------------------------------------------------------------------
# faults

@dataclass
class Faults:
    """The fault switches. Empty (all None) means a healthy hub.

    - rate_limit_429: {"scope": one of SCOPES, "retry_after": s, "times": n|None, "clients": [key]|None}
      -> 429 + Retry-After on matching requests (`times` None = every time; `clients` limits it to
      those clients, keys as in node_link_bps). A bare scope string works.
    - server_error_500: same shape -> 500.
    - cut_body: {"patterns": [glob], "fraction": 0.5, "times": n|None} -> a GET of a matching
      path announces the full Content-Length, sends `fraction` of it and closes the connection.
    - stall_body: same shape as cut_body -> a GET of a matching path sends `fraction` of its body, then
      keeps the connection open and silent until the fault is cleared (at most 600 s): a hub that stopped
      answering mid-file.
    - missing_file: [glob] -> listed in the tree, but HEAD/GET answer 404 EntryNotFound.
    - slow_link_bps: bytes per second for GET bodies, one line shared by every client (None = unthrottled).
    - node_link_bps: each client on its own line: an int (the same rate for every client) or
      {client: bps} with "*" for the rest; a client is `user@address`: the user owning the
      connecting socket (each sandbox node has its own) and its source address (`client_key`), and
      a key may name either part or both. With slow_link_bps too, a body is paced by both lines.
    - override_files: {path: text} -> served instead of (or in addition to) the repo's file;
      the commit sha changes with it (e.g. an index naming a shard that does not exist).
    """

    rate_limit_429: dict[str, Any] | None = None
    server_error_500: dict[str, Any] | None = None
    cut_body: dict[str, Any] | None = None
    stall_body: dict[str, Any] | None = None
    missing_file: list[str] = field(default_factory=list)
    slow_link_bps: int | None = None
    node_link_bps: int | dict[str, int] | None = None
    override_files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Faults:
        """Validate and normalise a JSON fault set; raises ValueError naming the bad key."""
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        f = cls()
        f.rate_limit_429 = _status_fault(obj.get("rate_limit_429"), "rate_limit_429")
        f.server_error_500 = _status_fault(obj.get("server_error_500"), "server_error_500")
        f.cut_body = _cut_fault(obj.get("cut_body"))
        f.stall_body = _cut_fault(obj.get("stall_body"))
        miss = obj.get("missing_file") or []
        f.missing_file = [miss] if isinstance(miss, str) else [str(m) for m in miss]
        bps = obj.get("slow_link_bps")
        if bps is not None and (not isinstance(bps, int) or bps <= 0):
            raise ValueError(f"slow_link_bps must be a positive int or null, got {bps!r}")
        f.slow_link_bps = bps
        f.node_link_bps = _node_links(obj.get("node_link_bps"))
        over = obj.get("override_files") or {}
        if not isinstance(over, dict) or not all(isinstance(v, str) for v in over.values()):
            raise ValueError("override_files must map path -> text")
        f.override_files = dict(over)
        return f


def _status_fault(v: Any, key: str) -> dict[str, Any] | None:
    if v in (None, False, {}):
        return None
    if v is True:
        v = {"scope": "all"}
    if isinstance(v, str):
        v = {"scope": v}
    if not isinstance(v, dict) or v.get("scope", "all") not in SCOPES:
        raise ValueError(f"{key} must be a scope in {SCOPES} or {{'scope','retry_after','times'}}, got {v!r}")
    clients = v.get("clients")
    if clients is not None and (not isinstance(clients, list) or not all(isinstance(c, str) for c in clients)):
        raise ValueError(f"{key}.clients must be a list of client keys (user, address or user@address), got {clients!r}")
    return {"scope": v.get("scope", "all"), "retry_after": int(v.get("retry_after", 1)),
            "times": None if v.get("times") is None else int(v["times"]), "clients": clients}


def _node_links(v: Any) -> int | dict[str, int] | None:
    def rate(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    if v is None or v == {}:
        return None
    if rate(v):
        return v
    if isinstance(v, dict) and all(isinstance(k, str) and rate(x) for k, x in v.items()):
        return dict(v)
    raise ValueError(f"node_link_bps must be a positive int or {{client: positive int}}, got {v!r}")


def _cut_fault(v: Any) -> dict[str, Any] | None:
    if v in (None, False, {}, []):
        return None
    if isinstance(v, str):
        v = {"patterns": [v]}
    elif isinstance(v, list):
        v = {"patterns": v}
    if not isinstance(v, dict) or not v.get("patterns"):
        raise ValueError(f"cut_body must be a glob, a list of globs or {{'patterns','fraction','times'}}, got {v!r}")
    frac = float(v.get("fraction", 0.5))
    if not 0 <= frac < 1:
        raise ValueError(f"cut_body.fraction must be in [0, 1), got {frac}")
    pats = [v["patterns"]] if isinstance(v["patterns"], str) else list(v["patterns"])
    return {"patterns": pats, "fraction": frac, "times": None if v.get("times") is None else int(v["times"])}


def _client_named(client: str, keys: list[str]) -> bool:
    """True when one of `keys` names the client `user@address` (the whole key, the user or the address)."""
    user, _, addr = client.rpartition("@")
    return any(k in (client, user, addr) for k in keys)


def _matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


# ----------------------------------------------------------------------------------------------
# the server

class HubServer(ThreadingHTTPServer):
    """The HTTP server; holds the store, the faults and the request log."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, repos_dir: Path, host: str, port: int, log_path: Path | None = None):
        self.store = RepoStore(repos_dir)
        self.faults = Faults()
        self.lock = threading.RLock()
        self.log_path = Path(log_path) if log_path else None
        self._log_file = open(self.log_path, "a", buffering=1, encoding="utf-8") if self.log_path else None
        self._link_next: dict[str, float] = {}
        super().__init__((host, port), HubHandler)

    def link_rates(self, client: str) -> dict[str, int]:
        """The lines a body to `client` goes through: {line: bytes/s} (shared line "", the client's own)."""
        f = self.faults
        lines = {"": f.slow_link_bps} if f.slow_link_bps else {}
        node = f.node_link_bps
        if isinstance(node, dict):
            node = next((bps for k, bps in node.items() if _client_named(client, [k])), node.get("*"))
        if node:
            lines["node:" + client] = node
        return lines

    def pace(self, nbytes: int, client: str = "") -> None:
        """Throttle a chunk on every line it goes through (the shared one, the client's own): FIFO slots."""
        lines = self.link_rates(client)
        if not lines:
            return
        with self.lock:
            now = time.monotonic()
            done_at = now
            for line, bps in lines.items():
                start = max(now, self._link_next.get(line, 0.0))
                self._link_next[line] = start + nbytes / bps
                done_at = max(done_at, self._link_next[line])
        delay = done_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the link, not synchronisation

    def log_request_record(self, rec: dict[str, Any]) -> None:
        """Append one JSON line to the request log."""
        if self._log_file:
            with self.lock:
                self._log_file.write(json.dumps(rec) + "\n")

    def take_fault(self, name: str, scope: str | None = None, path: str | None = None,
                   client: str = "") -> dict | None:
        """The active fault `name` if it applies to this request (and client); counts down its `times`."""
        with self.lock:
            fault = getattr(self.faults, name)
            if not fault:
                return None
            if scope is not None and fault["scope"] not in ("all", scope):
                return None
            if fault.get("clients") is not None and not _client_named(client, fault["clients"]):
                return None
            if path is not None and not _matches(path, fault["patterns"]):
                return None
            if fault["times"] is not None:
                if fault["times"] <= 0:
                    return None
                fault["times"] -= 1
            return dict(fault)

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
                self._json(self._model_info(snap, query.get("blobs", ["false"])[0] == "true"))
            return None
        if rest[:1] == ["tree"] and len(rest) >= 2:
            if self._status_faults("tree"):
                return None
            snap = self._snapshot(org, name, rest[1])
            if snap:
                recursive = query.get("recursive", ["false"])[0] == "true"
                self._json(self._tree(snap, "/".join(rest[2:]).strip("/"), recursive))
            return None
        self._error(404, None, f"Not found: {self.path}")

    def _model_info(self, snap: Snapshot, blobs: bool) -> dict[str, Any]:
        siblings = []
        for f in snap.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s |= {"size": f.size, "blobId": f.blob_id}
                if f.sha256:
                    s["lfs"] = {"sha256": f.sha256, "size": f.size,
                                "pointerSize": len(lfs_pointer(f.sha256, f.size))}
            siblings.append(s)
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(snap.last_modified))
        return {"_id": snap.commit[:24], "id": snap.repo_id, "modelId": snap.repo_id, "sha": snap.commit,
                "author": snap.repo_id.split("/")[0], "private": False, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "library_name": "mlx", "pipeline_tag": "text-generation",
                "tags": ["mlx", "safetensors", "llama", "text-generation"], "createdAt": modified,
                "lastModified": modified, "siblings": siblings,
                "usedStorage": sum(f.size for f in snap.files.values())}

    def _tree(self, snap: Snapshot, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = prefix + "/" if prefix else ""

        def wanted(p: str) -> bool:
            return p.startswith(base) and (recursive or "/" not in p[len(base):])

        dirs = [{"type": "directory", "path": d, "oid": hashlib.sha1(f"{snap.commit}:{d}".encode()).hexdigest()}
                for d in sorted(snap.dirs()) if wanted(d)]
        files = [f.tree_entry() for p, f in sorted(snap.files.items()) if wanted(p)]
        return dirs + files

    def _paths_info(self, org: str, name: str, rev: str) -> None:
        if self._status_faults("tree"):
            return None
        form = parse_qs(self.body.decode())
        snap = self._snapshot(org, name, rev)
        if snap:
            paths = form.get("paths", [])
            out = [snap.files[p].tree_entry() for p in paths if p in snap.files]
            out += [{"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()}
                    for p in paths if p in snap.dirs()]
            self._json(out)
        return None

    def _resolve(self, org: str, name: str, rev: str, path: str) -> None:
        if self._status_faults("head" if self.command == "HEAD" else "get") or self._status_faults("resolve"):
            return None
        snap = self._snapshot(org, name, rev)
        if snap is None:
            return None
        f = snap.files.get(path)
        if f is None or _matches(path, self.server.faults.missing_file):
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
        rates = self.server.link_rates(self.client)
        bps = min(rates.values()) if rates else None
        sent, pos, t0 = 0, start, time.monotonic()
        step = min(CHUNK, max(1024, bps // 20)) if bps else CHUNK
        while pos < stop:
            chunk = f.read(pos, min(stop, pos + step))
            self.server.pace(len(chunk), self.client)
            self.wfile.write(chunk)
            pos += len(chunk)
            sent += len(chunk)
        self.wfile.flush()
        held = time.monotonic() + STALL_HOLD_S
        while stall and self.server.faults.stall_body and time.monotonic() < held:
            time.sleep(0.1)  # silent, connection open: the client sees no byte and no end
        if cut:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        note = "fault:stall_body" if stall else "fault:cut_body" if cut else ("slow" if bps else "")
        self._record(status, sent, note, t0)


def _proc_net_addr(host: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp prints it (little-endian hex, then the port)."""
    return f"{struct.unpack('<I', socket.inet_aton(host))[0]:08X}:{port:04X}"


def client_key(client: tuple, server: tuple, proc_net: Path = Path("/proc/net/tcp")) -> str:
    """`user@address` of a connection's client: the user owning its socket (Linux /proc/net/tcp; "?" when
    not found) and its source address. On loopback a connection to the hub comes from the same address
    whichever node opens it, so the owner (each sandbox node has its own user) tells the nodes apart."""
    user = "?"
    try:
        local, remote = _proc_net_addr(client[0], client[1]), _proc_net_addr(server[0], server[1])
        for line in proc_net.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 7 and cols[1] == local and cols[2] == remote:
                user = pwd.getpwuid(int(cols[7])).pw_name
                break
    except (OSError, ValueError, KeyError, struct.error):
        pass
    return f"{user}@{client[0]}"


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


# ----------------------------------------------------------------------------------------------
# process handle

@dataclass
class HubHandle:
    """A running hub (in this process or another), driven over HTTP."""

    host: str
    port: int
    pid: int | None = None
    pid_file: Path | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The HF_ENDPOINT value."""
        return f"http://{self.host}:{self.port}"

    def _call(self, path: str, body: dict | None = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ValueError(f"hub refused {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def health(self) -> dict[str, Any]:
        """GET /_sandbox/health (raises when the hub does not answer)."""
        return self._call("/_sandbox/health", timeout=2.0)

    def set_faults(self, faults: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Replace all fault switches (see `Faults`); `set_faults()` clears them."""
        return self._call("/_sandbox/faults", {**(faults or {}), **kw})

    def clear_faults(self) -> dict[str, Any]:
        """Back to a healthy hub."""
        return self.set_faults({})

    def get_faults(self) -> dict[str, Any]:
        """The fault switches in force."""
        return self._call("/_sandbox/faults")

    def commit(self, repo_id: str) -> str | None:
        """The commit sha `main` resolves to now (with overrides), or None for an unknown repo."""
        return self._call(f"/_sandbox/commit/{repo_id}")["commit"]

    def requests(self) -> list[dict[str, Any]]:
        """Every request logged so far (the request log's JSON lines; a line still being written is left out)."""
        if not self.log_path or not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def is_alive(self) -> bool:
        """True when the pid still is this hub and it answers."""
        if self.pid is not None and not pid_matches(self.pid, _needles(self.host, self.port)):
            return False
        try:
            return bool(self.health().get("ok"))
        except OSError:
            return False


def _needles(host: str, port: int) -> list[str]:
    return ["sandbox.hub", "--host", host, "--port", str(port)]


def start_hub(repos_dir: Path, host: str, port: int, log_path: Path, pid_file: Path,
              python: str = sys.executable, timeout: float = 20.0) -> HubHandle:
    """Start the hub process, or reuse the one the pid file names when it is alive on host:port
    and runs the current code (otherwise that one is stopped first)."""
    pid = read_pid(pid_file)
    handle = HubHandle(host, port, pid, pid_file, log_path)
    if pid and handle.is_alive():
        if handle.health().get("code") == code_hash():
            return handle
        stop_pid(pid, _needles(host, port))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "sandbox.hub", "--repos", str(repos_dir), "--host", host, "--port", str(port),
            "--log", str(log_path), "--pid-file", str(pid_file)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    stderr_path = log_path.with_suffix(".stderr")
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True, env=env, cwd="/")
    handle.pid = proc.pid

    def up() -> bool:
        if proc.poll() is not None:
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"hub exited with {proc.returncode}: {tail}")
        return handle.is_alive()

    try:
        wait_until(up, timeout, f"the hub to answer on {handle.url}")
    except RuntimeError:
        raise
    return handle


def stop_hub(pid_file: Path, host: str, port: int) -> bool:
    """Stop the hub named by `pid_file` if that pid still is the hub on host:port."""
    stopped = stop_pid(read_pid(pid_file), _needles(host, port))
    pid_file.unlink(missing_ok=True)
    return stopped


# ----------------------------------------------------------------------------------------------
# entry point: python -m sandbox.hub --repos DIR --host H --port P --log FILE [--pid-file F]

def serve(argv: list[str] | None = None) -> int:
    """Run the hub in the foreground until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(prog="python -m sandbox.hub", description=__doc__.splitlines()[0])
    ap.add_argument("--repos", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--pid-file", type=Path)
    a = ap.parse_args(argv)
    server = HubServer(a.repos, a.host, a.port, a.log)
    if a.pid_file:
        tmp = a.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, a.pid_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"hub serving {a.repos} on http://{a.host}:{a.port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
