"""What the hub serves: model repos as snapshots, their ids, and the API bodies built from them.

Contract: `RepoStore(root)` serves repos from `<root>/<org>/<name>/` (every file below it, `.git` and
`DECLARED` excluded); a repo's commit sha is a stable 40-hex digest of its content (paths and blob ids), so
editing the directory gives a new commit. LFS files (by suffix) carry their sha256; every file its git
blob id. A repo's `DECLARED` file (`{"sizes": {path: bytes}}`) makes the hub list those files at the declared
size while it holds only their first bytes (a model too big for any sandbox, judged from its metadata and
never downloaded: a download of it ends short). `publish(repos, repo_id, src)` makes a repo equal a folder. \
`model_info`, `tree` and
`paths_info` are the JSON bodies of the Hub endpoints of those names for one snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".npz", ".mlpackage")
DECLARED = ".sandbox-declared.json"


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


def describe(path: str, data: bytes, source: Path | None = None, keep_data: bool = False,
             declared: int | None = None) -> RepoFile:
    """A RepoFile for `data`: LFS by suffix (oid = blob id of the pointer); with `declared`, listed at that size
    (its sha256 a stand-in: the content is not there)."""
    if declared is not None:
        sha = hashlib.sha256(f"declared {path} {declared}".encode() + data).hexdigest()
        return RepoFile(path, declared, git_blob_sha1(lfs_pointer(sha, declared)), sha, source)
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
            for name in sorted(n for n in filenames if not (n == DECLARED and Path(dirpath) == repo_dir)):
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
            declared = _declared(repo_dir)
            sig = (*sig, tuple(sorted(declared.items())))
            if cached is None or cached[0] != sig:
                files = {rel: describe(rel, src.read_bytes(), src, declared=declared.get(rel))
                         for rel, src, _, _ in listing}
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


def _declared(repo_dir: Path) -> dict[str, int]:
    """The repo's declared sizes ({} without a DECLARED file)."""
    try:
        return {str(p): int(n) for p, n in json.loads((repo_dir / DECLARED).read_text())["sizes"].items()}
    except FileNotFoundError:
        return {}


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
# API bodies

def model_info(snap: Snapshot, blobs: bool) -> dict[str, Any]:
    """`GET /api/models/{repo}[/revision/{rev}]` (`blobs`: sizes and lfs in the siblings)."""
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


def tree(snap: Snapshot, prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """`GET /api/models/{repo}/tree/{rev}/{prefix}`: the folders, then the files, under `prefix`."""
    base = prefix + "/" if prefix else ""

    def wanted(p: str) -> bool:
        return p.startswith(base) and (recursive or "/" not in p[len(base):])

    dirs = [{"type": "directory", "path": d, "oid": hashlib.sha1(f"{snap.commit}:{d}".encode()).hexdigest()}
            for d in sorted(snap.dirs()) if wanted(d)]
    files = [f.tree_entry() for p, f in sorted(snap.files.items()) if wanted(p)]
    return dirs + files


def paths_info(snap: Snapshot, paths: list[str]) -> list[dict[str, Any]]:
    """`POST /api/models/{repo}/paths-info/{rev}`: the entries of those of `paths` that exist."""
    out = [snap.files[p].tree_entry() for p in paths if p in snap.files]
    out += [{"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()}
            for p in paths if p in snap.dirs()]
    return out
