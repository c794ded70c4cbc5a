"""Probe `locate`: {path, model_folder} -> the configured model dir's size, and complete copies elsewhere.

Result: {expanded, bytes, files (under path, .cache included), elsewhere: [{path, n_files, total_size,
complete, why}]}. "Elsewhere" are the usual other places for the model folder (`alternates` of the
manifest probe: ~/Models, ~/.exo/models, exo's data dirs, EXO_MODELS_DIRS / EXO_DEFAULT_MODELS_DIR /
EXO_MODELS_READ_ONLY_DIRS, the HF hub cache snapshots, siblings of the configured parent). A copy is
complete when it has config.json, weight files, no partial-download markers and every shard its index
names. Runs with the manifest probe's helpers (`walk`, `alternates`, `read_index`) prepended.
"""

from __future__ import annotations

import os


def exo_env_dirs(folder: str) -> list:
    """The model folder under the models dirs named by exo's environment variables on this node."""
    out = []
    for var in ("EXO_DEFAULT_MODELS_DIR", "EXO_MODELS_DIRS", "EXO_MODELS_READ_ONLY_DIRS"):
        for d in (os.environ.get(var) or "").split(":"):
            if d.strip():
                out.append(os.path.join(os.path.expanduser(d.strip()), folder))
    return out


def completeness_of(root: str) -> tuple:
    """(complete, why-not) for a candidate copy: config.json, weights, no markers, every indexed shard."""
    names = []
    for rel, _st in walk(root):  # noqa: F821 - from the manifest probe, prepended
        if rel.startswith(".cache/huggingface/"):
            continue
        if rel.endswith((".incomplete", ".part", ".partial")):
            return False, "partial-download marker " + rel
        names.append(rel)
    if "config.json" not in names:
        return False, "no config.json"
    if not [n for n in names if n.endswith((".safetensors", ".gguf"))]:
        return False, "no weight files"
    index = read_index(root, names)  # noqa: F821
    if index and index.get("weight_files"):
        missing = [w for w in index["weight_files"] if w not in names]
        if missing:
            return False, "%d shard(s) named by the index missing" % len(missing)
    return True, ""


def main(args: dict) -> dict:
    """Size of the configured dir and every complete or partial copy of the model folder elsewhere."""
    expanded = os.path.abspath(os.path.expanduser(args["path"]))
    folder = args.get("model_folder") or os.path.basename(expanded.rstrip("/"))
    total = files = 0
    for _rel, st in walk(expanded):  # noqa: F821
        total += st.st_size
        files += 1
    found = alternates(expanded, folder)  # noqa: F821
    seen = set(os.path.realpath(a["path"]) for a in found)
    mine = os.path.realpath(expanded)
    for extra in exo_env_dirs(folder):
        real = os.path.realpath(extra)
        if real != mine and real not in seen and os.path.isdir(real):
            s = summarize(extra)  # noqa: F821
            if s["n_files"]:
                s["path"] = extra
                found.append(s)
                seen.add(real)
    for a in found:
        a["complete"], a["why"] = completeness_of(a["path"])
    return {"expanded": expanded, "bytes": total, "files": files, "elsewhere": found}
