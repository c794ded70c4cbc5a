"""Probe `manifest`: {path, model_folder, search_alternates} -> what is in a model dir, read in one walk.

Result keys: expanded, exists, is_dir, files [{path, size, mtime}] (relative, NFC, '/' separators; without
`.cache/huggingface/**` and macOS litter), cache_files, litter, markers (`*.incomplete|*.part|*.partial`
anywhere, `.cache/huggingface/download/` included), safetensors {rel: {ok, header_len, declared_data_len,
file_size, error}}, gguf {rel: {magic_ok}}, index {path, weight_files, error} | None, metadata
{rel: {commit, etag}}, tree {commit, files} | None, case_collisions [[names]], alternates [...].
While it walks, how far it is (files and bytes listed) goes out as progress lines every few seconds.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import unicodedata

if "progress_say" not in globals():  # imported as a module (tests); on a node _progress.py is prepended
    from modeldrop.probes._progress import progress_say

CACHE_PREFIX = ".cache/huggingface/"
MARKER_SUFFIXES = (".incomplete", ".part", ".partial")
LITTER_NAMES = {".DS_Store", ".localized", "Icon\r", ".Spotlight-V100", ".fseventsd", ".Trashes",
                ".TemporaryItems", ".DocumentRevisions-V100", ".metadata_never_index", ".apdisk",
                ".VolumeIcon.icns", ".com.apple.timemachine.donotpresent"}
MAX_HEADER = 100 * 1024 * 1024
FIRST_READ = 64 * 1024


def nfc(s: str) -> str:
    """NFC form of a path (APFS preserves whichever form the writer used)."""
    return unicodedata.normalize("NFC", s)


def is_litter(rel: str) -> bool:
    """True for macOS litter: any component in LITTER_NAMES or starting with '._'."""
    return any(part in LITTER_NAMES or part.startswith("._") for part in rel.split("/"))


def walk(root: str):
    """Yield (rel, stat) for every file under root; symlinked files followed, directory loops skipped."""
    seen = set()
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            st = os.stat(abs_dir)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            it = os.scandir(abs_dir)
        except OSError:
            continue
        with it:
            for e in it:
                rel = rel_dir + e.name
                try:
                    if e.is_dir():
                        stack.append((rel + "/", e.path))
                    else:
                        yield rel, e.stat()
                except OSError:
                    continue


def safetensors_header(path: str, size: int) -> dict:
    """Parse the 8-byte LE header length and the JSON header; ok iff 8 + header + data == file size."""
    out = {"ok": False, "header_len": None, "declared_data_len": None, "file_size": size, "error": None}
    try:
        with open(path, "rb") as f:
            head = f.read(FIRST_READ)
            if len(head) < 8:
                out["error"] = "file shorter than the 8-byte header length (%d B)" % len(head)
                return out
            (n,) = struct.unpack("<Q", head[:8])
            out["header_len"] = n
            if n > MAX_HEADER or 8 + n > size:
                out["error"] = "header length %d does not fit in a %d B file" % (n, size)
                return out
            raw = head[8:8 + n]
            if len(raw) < n:
                raw += f.read(n - len(raw))
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        declared = max(ends) if ends else 0
        out["declared_data_len"] = declared
        out["ok"] = 8 + n + declared == size
        if not out["ok"]:
            out["error"] = "header declares %d data bytes but the file holds %d" % (declared, size - 8 - n)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    return out


def gguf_magic(path: str) -> dict:
    """A GGUF file starts with b'GGUF'."""
    try:
        with open(path, "rb") as f:
            return {"magic_ok": f.read(4) == b"GGUF"}
    except OSError as exc:
        return {"magic_ok": False, "error": str(exc)}


def read_index(root: str, names: list) -> dict | None:
    """The top-level weight index (safetensors first, then .bin), with the files its weight_map names."""
    cands = sorted(n for n in names if "/" not in n and n.endswith(".safetensors.index.json"))
    cands = cands or sorted(n for n in names if "/" not in n and n.endswith(".bin.index.json"))
    if not cands:
        return None
    rel = cands[0]
    out = {"path": rel, "weight_files": [], "error": None, "all": cands}
    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        out["weight_files"] = sorted({nfc(v) for v in data["weight_map"].values()})
        out["total_size"] = (data.get("metadata") or {}).get("total_size")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    return out


def read_metadata(root: str, rel: str) -> dict:
    """`.cache/huggingface/download/<path>.metadata`: line 1 commit, line 2 etag, line 3 timestamp."""
    try:
        with open(os.path.join(root, rel), "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
        return {"commit": lines[0].strip() if lines else None,
                "etag": lines[1].strip() if len(lines) > 1 else None}
    except (OSError, ValueError) as exc:
        return {"commit": None, "etag": None, "error": str(exc)}


def read_tree(root: str, metadata: dict, cache_files: list) -> dict | None:
    """The cached hub tree of the commit most .metadata files name (or the only tree file there is)."""
    commits = {}
    for m in metadata.values():
        if m.get("commit"):
            commits[m["commit"]] = commits.get(m["commit"], 0) + 1
    trees = [c["path"] for c in cache_files if c["path"].startswith(CACHE_PREFIX + "trees/")
             and c["path"].endswith(".json")]
    if commits:
        commit = max(sorted(commits), key=lambda c: commits[c])
        rel = CACHE_PREFIX + "trees/" + commit + ".json"
        if rel not in trees:
            return None
    elif len(trees) == 1:
        rel = trees[0]
        commit = rel[len(CACHE_PREFIX + "trees/"):-len(".json")]
    else:
        return None
    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        files = {}
        for p, e in data.get("files", {}).items():
            files[nfc(p)] = {"size": e.get("lfs_size") if e.get("lfs_size") is not None else e.get("size"),
                             "blob_id": e.get("blob_id"), "lfs_sha256": e.get("lfs_sha256")}
        return {"commit": commit, "path": rel, "files": files, "error": None}
    except (OSError, ValueError, AttributeError) as exc:
        return {"commit": commit, "path": rel, "files": {}, "error": "%s: %s" % (type(exc).__name__, exc)}


def summarize(root: str) -> dict:
    """n_files and total_size of a candidate dir (cache and litter excluded)."""
    n = total = 0
    for rel, st in walk(root):
        if rel.startswith(CACHE_PREFIX) or is_litter(rel):
            continue
        n += 1
        total += st.st_size
    return {"n_files": n, "total_size": total}


def alternates(expanded: str, folder: str) -> list:
    """Other dirs on this node that hold the model folder, with file counts and sizes."""
    home = os.path.expanduser("~")
    cands = [os.path.join(home, d, folder) for d in ("Models", "models", ".exo/models", ".local/share/exo/models",
                                                      "Downloads", "Desktop")]
    parts = folder.split("--", 1)
    if len(parts) == 2:
        hub_roots = [os.path.join(home, ".cache", "huggingface", "hub")]
        if os.environ.get("HF_HUB_CACHE"):
            hub_roots.append(os.environ["HF_HUB_CACHE"])
        if os.environ.get("HF_HOME"):
            hub_roots.append(os.path.join(os.environ["HF_HOME"], "hub"))
        for r in hub_roots:
            cands += sorted(glob.glob(os.path.join(r, "models--" + folder, "snapshots", "*")))
    parent = os.path.dirname(expanded.rstrip("/"))
    grand = os.path.dirname(parent)
    cands += sorted(glob.glob(os.path.join(glob.escape(grand), "*", glob.escape(folder))))
    cands += sorted(glob.glob(os.path.join(glob.escape(parent), "*", glob.escape(folder))))
    out, seen = [], set()
    mine = os.path.realpath(expanded)
    for c in cands:
        real = os.path.realpath(c)
        if real == mine or real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        s = summarize(c)
        if s["n_files"]:
            s["path"] = c
            out.append(s)
    return out


def main(args: dict) -> dict:
    """Walk the model dir once and report files, markers, headers, index, hf metadata and alternates."""
    expanded = os.path.abspath(os.path.expanduser(args["path"]))
    out = {"expanded": expanded, "exists": os.path.exists(expanded), "is_dir": os.path.isdir(expanded),
           "files": [], "cache_files": [], "litter": [], "markers": [], "safetensors": {}, "gguf": {},
           "index": None, "metadata": {}, "tree": None, "case_collisions": [], "non_nfc": [],
           "alternates": []}
    folder = args.get("model_folder") or os.path.basename(expanded.rstrip("/"))
    if args.get("search_alternates"):
        out["alternates"] = alternates(expanded, folder)
    if not out["is_dir"]:
        return out
    listed = {"files": 0, "bytes": 0}
    for raw_rel, st in walk(expanded):
        rel = nfc(raw_rel)
        entry = {"path": rel, "size": st.st_size, "mtime": st.st_mtime}
        listed["files"] += 1
        listed["bytes"] += st.st_size
        progress_say(listed)
        if rel != raw_rel:
            out["non_nfc"].append(rel)
        if rel.endswith(MARKER_SUFFIXES):
            out["markers"].append(entry)
        if rel.startswith(CACHE_PREFIX):
            out["cache_files"].append(entry)
            if rel.startswith(CACHE_PREFIX + "download/") and rel.endswith(".metadata"):
                key = rel[len(CACHE_PREFIX + "download/"):-len(".metadata")]
                out["metadata"][key] = read_metadata(expanded, raw_rel)
            continue
        if is_litter(rel):
            out["litter"].append(entry)
            continue
        out["files"].append(entry)
        full = os.path.join(expanded, raw_rel)
        if rel.endswith(".safetensors"):
            out["safetensors"][rel] = safetensors_header(full, st.st_size)
        elif rel.endswith(".gguf"):
            out["gguf"][rel] = gguf_magic(full)
    for key in ("files", "cache_files", "litter", "markers"):
        out[key].sort(key=lambda e: e["path"])
    groups = {}
    for e in out["files"]:
        groups.setdefault(e["path"].casefold(), []).append(e["path"])
    out["case_collisions"] = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    out["index"] = read_index(expanded, [e["path"] for e in out["files"]])
    present = set(e["path"] for e in out["files"])  # .metadata of files no longer there is noise
    live = dict((k, v) for k, v in out["metadata"].items() if k in present)
    out["tree"] = read_tree(expanded, live, out["cache_files"])
    return out
