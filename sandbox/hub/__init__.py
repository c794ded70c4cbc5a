"""A fake Hugging Face hub for the real `hf download` CLI (HF_ENDPOINT), with fault switches.

Contract (the hub API `hf download` uses):
- Serves model repos from `<repos>/<org>/<name>/` (`repos`: snapshots, commit shas, `publish`).
- Endpoints: `GET /api/agent-harnesses`; `GET /api/models/{o}/{n}[/revision/{rev}]`
  (`?blobs=true` adds sizes and lfs to siblings); `GET /api/models/{o}/{n}/tree/{rev}[/{path}]`
  (`recursive`, lfs blocks for *.safetensors/*.gguf/*.bin, git-blob sha1 oids); `POST
  /api/models/{o}/{n}/paths-info/{rev}`; `HEAD|GET /{o}/{n}/resolve/{rev}/{path}` with
  X-Repo-Commit, ETag (sha256 for lfs files, blob sha1 otherwise), Content-Length, Range -> 206.
  Errors are 404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound (`server`).
- Fault switches (`faults.Faults`), replaced at runtime by `POST /_sandbox/faults` (JSON) or
  `HubHandle.set_faults(...)`; `GET /_sandbox/faults` reads them; `GET /_sandbox/health`. Link limits
  pace bodies per shared line and per client (`links`).
- Every request is appended as one JSON line to the request log.
- `start_hub(...)` runs `python -m sandbox.hub` as its own process and returns a `HubHandle`;
  `stop_hub(pid_file)` stops exactly that process (`handle`).
"""

from sandbox.hub.faults import Faults
from sandbox.hub.handle import HubHandle, start_hub, stop_hub
from sandbox.hub.links import client_key
from sandbox.hub.repos import git_blob_sha1, publish

__all__ = ["Faults", "HubHandle", "client_key", "git_blob_sha1", "publish", "start_hub", "stop_hub"]
