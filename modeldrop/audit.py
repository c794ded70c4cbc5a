"""Pure verdicts on model dirs from `manifest` probe results: completeness of one node, parity of several.

No I/O here. `completeness` says whether one node's model dir is a complete, clean download (markers,
one weight format, config.json, index and shards, safetensors headers vs file sizes, GGUF magic, expected
counts, the hub's file list and sizes, one commit); `parity` says whether several nodes hold the same
files (path NFC, size; `.cache/huggingface/` and macOS litter excluded). Problems are one line each,
counted and worded for the operator; warnings do not fail a gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from fnmatch import fnmatchcase

from modeldrop.hub import ExpectedManifest
from modeldrop.probes.manifest import CACHE_PREFIX, is_litter
from modeldrop.verdict import Verdict

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".index.json")
MAX_LISTED = 6
MAX_PARITY_LINES = 40


# --- wording helpers ---------------------------------------------------------------------------------
def human_bytes(n: int | None) -> str:
    """12 B, 1.5 kB, 1.2 MB, 3.4 GB (decimal units)."""
    if n is None:
        return "? B"
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    return f"{n} B"


def listing(items: list[str], limit: int = MAX_LISTED) -> str:
    """'a; b; c' or 'a; b; … and 4 more'."""
    shown = "; ".join(items[:limit])
    return shown + (f"; … and {len(items) - limit} more" if len(items) > limit else "")


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 shard', '2 shards'."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def weight_format(rel: str) -> str | None:
    """'safetensors', 'gguf', 'pytorch' or None for a non-weight file."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".gguf"):
        return "gguf"
    if name.endswith((".pt", ".pth")) or (name.endswith(".bin") and "model" in name):
        return "pytorch"
    return None


# --- completeness ----------------------------------------------------------------------------------
def completeness(manifest: dict, expected: ExpectedManifest | None, *, include=(), exclude=(),
                 expected_safetensors: int | None = None, expected_gguf: int | None = None,
                 strict: bool = True, label: str = "model dir") -> Verdict:
    """Is this node's model dir a complete download? `label` names the dir in messages (e.g. MODEL_DIR_NODE2);
    `include` / `exclude`: the hf download patterns (files they leave out are not expected)."""
    v = Verdict.open()
    files = {e["path"]: e["size"] for e in manifest.get("files", [])}
    v.details.update(expanded=manifest.get("expanded"), n_files=len(files), total_bytes=sum(files.values()),
                   n_markers=len(manifest.get("markers", [])), n_litter=len(manifest.get("litter", [])),
                   alternates=[a["path"] for a in manifest.get("alternates") or []])
    if not _dir_present(manifest, files, v, label):
        _check_markers(manifest, v)
        return v.settle()
    _check_markers(manifest, v)
    _check_formats(manifest, files, v, expected_safetensors, expected_gguf, strict)
    _check_index(manifest, files, v, strict)
    _check_headers(manifest, v)
    _check_metadata_commits(manifest, expected, v)
    if expected is not None:
        wanted = expected.filtered(tuple(include), tuple(exclude)) if include or exclude else expected
        _check_expected(manifest, files, wanted, v)
    if manifest.get("case_collisions"):
        groups = [" / ".join(g) for g in manifest["case_collisions"]]
        v.problems.append(f"{plural(len(groups), 'name collision')} that differ only in case or Unicode form "
                          f"(one file on a case-insensitive APFS volume): {listing(groups)}")
    return v.settle(f"complete: {plural(len(files), 'file')}, {human_bytes(sum(files.values()))}")


def _alternates_hint(manifest: dict) -> str:
    alts = manifest.get("alternates") or []
    if not alts:
        return ""
    best = max(alts, key=lambda a: (a["total_size"], a["n_files"]))
    hint = f" but the model is at {best['path']} ({plural(best['n_files'], 'file')}, {human_bytes(best['total_size'])})"
    others = [a["path"] for a in alts if a is not best]
    return hint + (f"; other copies: {listing(others)}" if others else "")


def _dir_present(manifest: dict, files: dict, v: Verdict, label: str) -> bool:
    where = manifest.get("expanded")
    if not manifest.get("exists"):
        v.problems.append(f"{label} {where} does not exist{_alternates_hint(manifest)}")
        return False
    if not manifest.get("is_dir", True):
        v.problems.append(f"{label} {where} is not a directory")
        return False
    if not files:
        extra = " (only hf's .cache/huggingface bookkeeping is there)" if manifest.get("cache_files") else ""
        v.problems.append(f"{label} {where} is empty{extra}{_alternates_hint(manifest)}")
        return False
    return True


def _check_markers(manifest: dict, v: Verdict) -> None:
    markers = manifest.get("markers") or []
    in_cache = [m for m in markers if m["path"].startswith(CACHE_PREFIX)]
    in_tree = [m for m in markers if not m["path"].startswith(CACHE_PREFIX)]
    if in_tree:
        items = [f"{m['path']} ({human_bytes(m['size'])})" for m in in_tree]
        v.problems.append(f"{plural(len(in_tree), 'partial-download marker')} in the model dir: {listing(items)} "
                          "- a download was interrupted or is still running; rerun the download")
    if in_cache:
        items = [f"{m['path']} ({human_bytes(m['size'])})" for m in in_cache]
        root = manifest.get("expanded", "<dir>")
        v.problems.append(
            f"{plural(len(in_cache), 'unfinished hf download file')} under .cache/huggingface/download: "
            f"{listing(items)} - hf leaves these when a download is killed and never removes them, so this may be "
            f"a stale orphan from an interrupted earlier run: if the other checks pass and no download is running, "
            f"delete {root}/"
            f"{in_cache[0]['path'] if len(in_cache) == 1 else '.cache/huggingface/download/**/*.incomplete'}"
            " and rerun the verify gate")


def _check_formats(manifest: dict, files: dict, v: Verdict, want_st: int | None, want_gguf: int | None,
                   strict: bool) -> None:
    formats = Counter(f for f in map(weight_format, files) if f)
    v.details.update(formats=dict(formats), n_safetensors=formats.get("safetensors", 0), n_gguf=formats.get("gguf", 0))
    if len(formats) > 1:
        v.problems.append("mixed weight formats: " + ", ".join(f"{n} {f}" for f, n in sorted(formats.items())) +
                          " - exo loads one format; download with HF_INCLUDE for one of them")
    if not formats:
        v.problems.append("no weight files (.safetensors / .gguf) in the model dir")
    if "config.json" not in files and (formats.get("safetensors") or not formats.get("gguf")):
        v.problems.append("config.json is missing")
    for kind, want in (("safetensors", want_st), ("gguf", want_gguf)):
        have = formats.get(kind, 0)
        if want is not None and have != want:
            msg = f"expected {plural(want, kind + ' file')}, found {have}"
            (v.problems if strict else v.warnings).append(msg)


def _check_index(manifest: dict, files: dict, v: Verdict, strict: bool) -> None:
    shards = sorted(p for p in files if p.endswith(".safetensors"))
    index = manifest.get("index")
    if index is None:
        if len(shards) > 1:
            v.problems.append(f"{len(shards)} safetensors files but no model.safetensors.index.json")
        return
    if index.get("error"):
        v.problems.append(f"index {index['path']} is unreadable: {index['error']}")
        return
    named = index.get("weight_files") or []
    missing = [p for p in named if p not in files]
    empty = [p for p in named if files.get(p) == 0]
    v.details.update(index=index["path"], index_shards=len(named))
    if missing:
        v.problems.append(f"index {index['path']} names {plural(len(missing), 'shard')} that "
                          f"{'is' if len(missing) == 1 else 'are'} missing: {listing(missing)}")
    if empty:
        v.problems.append(f"{plural(len(empty), 'shard')} named by the index {'is' if len(empty) == 1 else 'are'} "
                          f"empty (0 B): {listing(empty)}")
    if index["path"].endswith(".safetensors.index.json"):
        unindexed = [p for p in shards if p not in set(named)]
        if unindexed:
            msg = f"{plural(len(unindexed), 'safetensors file')} not named by {index['path']}: {listing(unindexed)}"
            (v.problems if strict else v.warnings).append(msg)


def _check_headers(manifest: dict, v: Verdict) -> None:
    truncated, longer, broken = [], [], []
    for rel, h in sorted((manifest.get("safetensors") or {}).items()):
        if h.get("ok"):
            continue
        declared, header_len = h.get("declared_data_len"), h.get("header_len")
        if declared is None or header_len is None:
            broken.append(f"{rel}: {h.get('error') or 'unreadable header'}")
            continue
        holds = h["file_size"] - 8 - header_len
        line = f"{rel} declares {declared} data bytes but the file holds {holds}"
        (truncated if holds < declared else longer).append(line)
    if truncated:
        v.problems.append(f"{plural(len(truncated), 'shard')} truncated: {listing(truncated)}")
    if longer:
        v.problems.append(f"{plural(len(longer), 'shard')} longer than the header says: {listing(longer)}")
    if broken:
        v.problems.append(f"{plural(len(broken), 'safetensors header')} unreadable: {listing(broken)}")
    bad_gguf = sorted(rel for rel, g in (manifest.get("gguf") or {}).items() if not g.get("magic_ok"))
    if bad_gguf:
        v.problems.append(f"{plural(len(bad_gguf), 'GGUF file')} without the GGUF magic: {listing(bad_gguf)}")


def live_metadata(manifest: dict) -> tuple[dict[str, dict], list[str]]:
    """(metadata of files that exist in the model dir, paths of orphaned `.metadata` files).

    hf leaves `.cache/huggingface/download/<f>.metadata` behind when `<f>` left the repo (an earlier
    revision): such orphans are cache noise, listed in the evidence and never checked.
    """
    files = {e["path"] for e in manifest.get("files", [])}
    meta = manifest.get("metadata") or {}
    return {p: m for p, m in meta.items() if p in files}, sorted(p for p in meta if p not in files)


def _check_metadata_commits(manifest: dict, expected: ExpectedManifest | None, v: Verdict) -> None:
    live, orphans = live_metadata(manifest)
    if orphans:
        v.details["metadata_noise"] = [f"{CACHE_PREFIX}download/{p}.metadata" for p in orphans]
    commits = Counter(m.get("commit") for m in live.values() if m.get("commit"))
    v.details["commits"] = dict(commits)
    if len(commits) > 1:
        parts = [f"{c[:12]} ({plural(n, 'file')})" for c, n in commits.most_common()]
        v.problems.append("mixed commits in .cache/huggingface/download/*.metadata: " + ", ".join(parts) +
                          " - a revision switch was interrupted; rerun the download")
    elif commits and expected is not None and expected.source == "hub":
        (only,) = commits
        if only != expected.commit:
            v.problems.append(f"files were downloaded at commit {only[:12]} but the hub's revision is at "
                              f"{expected.commit[:12]} (hf can exit 0 serving stale files when a hub call fails); "
                              "rerun the download")


def _check_expected(manifest: dict, files: dict, exp: ExpectedManifest, v: Verdict) -> None:
    src = f"the {'hub' if exp.source == 'hub' else 'cached hub tree'} at {exp.commit[:12]}"
    v.details.update(expected_commit=exp.commit, expected_source=exp.source, expected_files=len(exp.files),
                   expected_bytes=exp.total_size)
    missing = sorted(p for p in exp.files if p not in files)
    wrong = sorted(p for p in exp.files if p in files and files[p] != exp.files[p].size)
    total = sum(files.get(p, 0) for p in exp.files)
    if missing:
        items = [f"{p} ({human_bytes(exp.files[p].size)})" for p in missing]
        v.problems.append(f"{plural(len(missing), 'expected file')} missing ({src}): {listing(items)}; "
                          f"{human_bytes(total)} of {human_bytes(exp.total_size)} present")
    if wrong:
        items = [f"{p}: {files[p]} B on disk, {exp.files[p].size} B expected" for p in wrong]
        v.problems.append(f"{plural(len(wrong), 'file')} {'differs' if len(wrong) == 1 else 'differ'} in size "
                          f"from {src}: {listing(items)}")
    metadata = manifest.get("metadata") or {}
    etag_bad = []
    for p, e in sorted(exp.files.items()):
        tag = (metadata.get(p) or {}).get("etag")
        if tag and p in files and tag not in (e.sha256, e.blob_id):
            etag_bad.append(f"{p}: etag {tag[:12]}, expected {(e.sha256 or e.blob_id or '?')[:12]}")
    if etag_bad:
        v.problems.append(f"{plural(len(etag_bad), 'file')} recorded by hf with another content hash than {src}: "
                          f"{listing(etag_bad)}")
    markers = {m["path"] for m in manifest.get("markers") or []}
    extra = sorted(p for p in files if p not in exp.files and p not in markers)
    if extra:
        items = [f"{p} ({human_bytes(files[p])})" for p in extra]
        v.warnings.append(f"{plural(len(extra), 'file')} not in {src}: {listing(items)}")


# --- parity ----------------------------------------------------------------------------------------
def _sizes(manifest: dict) -> dict[str, int]:
    return {e["path"]: e["size"] for e in manifest.get("files", [])
            if not e["path"].startswith(CACHE_PREFIX) and not is_litter(e["path"])}


def is_weight_path(rel: str) -> bool:
    """Weight files and their index: differences here always fail parity."""
    return rel.endswith(WEIGHT_SUFFIXES)


def parity(manifests: dict[str, dict], *, strict: bool = True) -> Verdict:
    """Do all nodes hold the same (path, size) set? Non-weight differences are warnings when not strict."""
    sizes = {node: _sizes(m) for node, m in manifests.items()}
    nodes = list(sizes)
    v = Verdict.open()
    v.details.update({"nodes": nodes, "n_files": {n: len(s) for n, s in sizes.items()},
                      "digests": {n: manifest_digest(m) for n, m in manifests.items()}})
    diffs = 0
    for path in sorted(set().union(*sizes.values()) if sizes else ()):
        have = {n: s[path] for n, s in sizes.items() if path in s}
        line = None
        if len(have) < len(nodes):
            vals = set(have.values())
            size_txt = human_bytes(next(iter(vals))) if len(vals) == 1 else ", ".join(
                f"{n} {b} B" for n, b in have.items())
            line = f"only on {', '.join(have)}: {path} ({size_txt})"
        elif len(set(have.values())) > 1:
            line = f"size differs: {path}: " + ", ".join(f"{n} {b} B" for n, b in have.items())
        if line:
            diffs += 1
            (v.problems if strict or is_weight_path(path) else v.warnings).append(line)
    diffs += _etag_differences(manifests, v)
    v.details["n_differences"] = diffs
    for lines in (v.problems, v.warnings):
        if len(lines) > MAX_PARITY_LINES:
            lines[MAX_PARITY_LINES:] = [f"… and {len(lines) - MAX_PARITY_LINES} more differences "
                                        "(the manifests in the run folder list them all)"]
    return v.settle(f"{len(nodes)} nodes hold the same files")


def _etag_differences(manifests: dict[str, dict], v: Verdict) -> int:
    """Same path, same size, different hf etag in .metadata: different content."""
    tags: dict[str, dict[str, str]] = {}
    for node, m in manifests.items():
        for path, meta in live_metadata(m)[0].items():
            if meta.get("etag"):
                tags.setdefault(path, {})[node] = meta["etag"]
    n = 0
    for path, per_node in sorted(tags.items()):
        if len(set(per_node.values())) > 1:
            n += 1
            v.problems.append(f"content differs (hf etag in .metadata): {path}: " +
                              ", ".join(f"{node} {tag[:12]}" for node, tag in per_node.items()))
    return n


def manifest_digest(manifest: dict) -> str:
    """sha256 of the sorted (path, size, mtime) list (cache and litter excluded): a cheap key for the pass
    cache that changes when a file is rewritten in place, even at the same size."""
    sizes = _sizes(manifest)
    mtimes = {f.get("path"): f.get("mtime") for f in manifest.get("files") or []}
    items = sorted((p, n, round(float(mtimes[p]), 3) if mtimes.get(p) is not None else None)
                   for p, n in sizes.items())
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()


# --- layout (what a model profile records) ----------------------------------------------------------
SERVING_ARTIFACTS = ("config.json", "generation_config.json", "*.index.json", "tokenizer*", "special_tokens_map.json",
                     "added_tokens.json", "vocab*", "merges.txt", "chat_template*", "preprocessor_config.json",
                     "processor_config.json", "*.tiktoken")


def shard_pattern(names: list[str]) -> str | None:
    """The weight files' name pattern: the one name, or the names with the digit runs that differ between them as
    `*` (`model-*-of-00009.safetensors`); None without weight files."""
    if not names:
        return None
    split = [re.split(r"(\d+)", n) for n in sorted(names)]
    cols = list(zip(*split, strict=True)) if len({len(s) for s in split}) == 1 else [tuple(names)]
    return "".join(c[0] if len(set(c)) == 1 else "*" if i % 2 else _wild(list(c)) for i, c in enumerate(cols))


def _wild(words: list[str]) -> str:
    """Words that differ as one glob: their common prefix, `*`, their common suffix."""
    prefix = os.path.commonprefix(words)
    suffix = os.path.commonprefix([w[len(prefix):][::-1] for w in words])[::-1]
    return f"{prefix}*{suffix}"


def layout(manifest: dict) -> dict:
    """What a profile row records of a complete model dir (the guide's "check and record"): the file count, the
    weight files' name pattern, and the non-weight files serving needs (config, index, tokenizer, chat template)."""
    files = [e["path"] for e in manifest.get("files", [])]
    weights = [p.rsplit("/", 1)[-1] for p in files if weight_format(p) in ("safetensors", "gguf")]
    required = sorted(p for p in files if weight_format(p) is None
                      and any(fnmatchcase(p.rsplit("/", 1)[-1], g) for g in SERVING_ARTIFACTS))
    return {"file_count": len(files), "shard_pattern": shard_pattern(weights), "required_files": required}
