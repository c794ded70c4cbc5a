"""Probe `dirsize`: {path, markers?} -> {bytes, files[, markers]}: the sum of st_size under path, .cache/huggingface
included; with `markers` true also every partial-download marker (`*.incomplete|*.part|*.partial`) as
{path (relative), size, mtime}.

Used for download progress: hf writes into `.cache/huggingface/download/*.incomplete` before renaming; and by the
download's wait-and-retry, to tell a marker this run's hf left from an earlier run's orphan.
"""

from __future__ import annotations

import os

MARKER_SUFFIXES = (".incomplete", ".part", ".partial")  # as the manifest probe's


def main(args: dict) -> dict:
    """Logical bytes and file count under the expanded path (0, 0 when it does not exist), markers when asked."""
    expanded = os.path.expanduser(args["path"])
    want_markers = bool(args.get("markers"))
    total = files = 0
    markers = []
    stack = [expanded]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                        continue
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_size
                files += 1
                if want_markers and e.name.endswith(MARKER_SUFFIXES):
                    markers.append({"path": os.path.relpath(e.path, expanded), "size": st.st_size,
                                    "mtime": st.st_mtime})
    out = {"expanded": expanded, "bytes": total, "files": files}
    if want_markers:
        out["markers"] = sorted(markers, key=lambda m: m["path"])
    return out
