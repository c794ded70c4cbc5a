"""Probe `dirsize`: {path} -> {bytes, files}: the sum of st_size under path, .cache/huggingface included.

Used for download progress: hf writes into `.cache/huggingface/download/*.incomplete` before renaming.
"""

from __future__ import annotations

import os


def main(args: dict) -> dict:
    """Logical bytes and file count under the expanded path (0, 0 when it does not exist)."""
    expanded = os.path.expanduser(args["path"])
    total = files = 0
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
                    else:
                        total += e.stat(follow_symlinks=False).st_size
                        files += 1
                except OSError:
                    continue
    return {"expanded": expanded, "bytes": total, "files": files}
