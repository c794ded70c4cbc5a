"""Build model dirs on disk for the self-tests and measurements: safetensors shards with valid headers,
an index, config/tokenizer files and, optionally, hf's `.cache/huggingface` bookkeeping (metadata + tree).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from sandbox.hub import git_blob_sha1

COMMIT = "c0ffee" + "0" * 34


def write_safetensors(path: Path, data_bytes: int, *, chunk: bytes | None = None) -> int:
    """A safetensors file with one F32 tensor of data_bytes (multiple of 4) bytes; returns the file size."""
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [data_bytes // 4], "data_offsets": [0, data_bytes]}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        block = chunk or os.urandom(min(data_bytes, 1 << 20) or 1)
        left = data_bytes
        while left > 0:
            f.write(block[:left])
            left -= len(block[:left])
    return path.stat().st_size


def make_model(root: Path, *, n_shards: int = 3, shard_bytes: int = 4096, hf_cache: bool = True,
               commit: str = COMMIT, chunk: bytes | None = None) -> dict[str, dict]:
    """A sharded safetensors model in root; returns {path: {size, sha256, blob_id}} (the hub tree)."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"model-{i:05d}-of-{n_shards:05d}.safetensors" for i in range(1, n_shards + 1)]
    for n in names:
        write_safetensors(root / n, shard_bytes, chunk=chunk)
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": shard_bytes * n_shards}, "weight_map": {f"w{i}": n for i, n in enumerate(names)}}))
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    tree = {}
    for p in sorted(x for x in root.rglob("*") if x.is_file() and ".cache" not in x.parts):
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        lfs = rel.endswith(".safetensors")
        tree[rel] = {"size": len(data), "blob_id": git_blob_sha1(data),
                     "sha256": hashlib.sha256(data).hexdigest() if lfs else None}
    if hf_cache:
        write_hf_cache(root, tree, commit)
    return tree


def write_hf_cache(root: Path, tree: dict[str, dict], commit: str = COMMIT) -> None:
    """hf's local-dir bookkeeping: download/<path>.metadata, .lock files, trees/<commit>.json."""
    cache = root / ".cache" / "huggingface"
    (cache / "trees").mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*")
    files = {}
    for rel, e in tree.items():
        meta = cache / "download" / (rel + ".metadata")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(f"{commit}\n{e['sha256'] or e['blob_id']}\n1700000000.0\n")
        meta.with_suffix(".lock").write_bytes(b"")
        files[rel] = {"size": e["size"], "blob_id": e["blob_id"]}
        if e["sha256"]:
            files[rel].update(lfs_sha256=e["sha256"], lfs_size=e["size"])
    (cache / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": files}))
