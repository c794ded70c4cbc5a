"""Online model download.

Contract: ``download_model(endpoint, model_id, dest, on_progress)`` lists the repo with
``GET {endpoint}/api/models/{id}/tree/main?recursive=true`` and fetches every file with
``GET {endpoint}/{id}/resolve/main/{path}`` into ``dest/<path>.partial`` (resumed with ``Range``),
renamed when complete. ``on_progress(done_bytes, total_bytes, done_files, total_files)`` is called
after every 1 MiB and file. Raises ``RuntimeError`` with a one-line reason on any failure.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _request(url: str, headers: dict[str, str] | None = None) -> Any:
    hdrs = dict(headers or {})
    token = os.environ.get("HF_TOKEN")
    if token:
        hdrs["authorization"] = f"Bearer {token}"
    return urllib.request.urlopen(urllib.request.Request(url, headers=hdrs), timeout=30)  # noqa: S310


def list_files(endpoint: str, model_id: str) -> list[dict[str, Any]]:
    url = f"{endpoint.rstrip('/')}/api/models/{model_id}/tree/main?recursive=true&expand=false"
    try:
        with _request(url) as resp:
            entries = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise RuntimeError(f"Model '{model_id}' requires authentication. Set HF_TOKEN") from None
        raise RuntimeError(f"Failed to fetch file list for {model_id}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"No internet connection and no cached file list for {model_id}: {exc}") from None
    return [e for e in entries if e.get("type") == "file"]


def _fetch(endpoint: str, model_id: str, path: str, target: Path, step: Callable[[int], None]) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    url = f"{endpoint.rstrip('/')}/{model_id}/resolve/main/{urllib.parse.quote(path)}"
    headers = {"range": f"bytes={have}-"} if have else {}
    try:
        with _request(url, headers) as resp, open(partial, "ab" if resp.status == 206 else "wb") as out:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                step(len(chunk))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"Download error for {model_id}/{path}: HTTP {exc.code}") from None
    except OSError as exc:
        raise RuntimeError(f"Download error for {model_id}/{path}: {exc}") from None
    partial.replace(target)


def download_model(endpoint: str, model_id: str, dest: Path,
                   on_progress: Callable[[int, int, int, int], None]) -> None:
    files = list_files(endpoint, model_id)
    total = sum(int(f.get("size", 0)) for f in files)
    done = {"bytes": 0, "files": 0}

    def step(n: int) -> None:
        done["bytes"] += n
        on_progress(done["bytes"], total, done["files"], len(files))

    for f in files:
        target = dest / f["path"]
        if target.exists() and target.stat().st_size == int(f.get("size", -1)):
            done["bytes"] += target.stat().st_size
        else:
            _fetch(endpoint, model_id, f["path"], target, step)
        done["files"] += 1
        on_progress(done["bytes"], total, done["files"], len(files))
