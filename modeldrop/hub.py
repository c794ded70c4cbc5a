"""The expected manifest of a model repo at a commit: from the hub (HfApi) or from a node's hf tree cache.

`expected_online` asks the hub on the control host (model_info for the commit, then the recursive tree at
that commit); `expected_from_cache` reads the `tree` the `manifest` probe found in the model dir's
`.cache/huggingface/trees/<commit>.json` (offline). Both give an `ExpectedManifest` that `audit.completeness`
checks the files against. `filter_include` applies `--include` patterns with hf's own semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

from modeldrop.errors import NodeError


@dataclass(frozen=True)
class ExpectedFile:
    """One file of the repo: real content size, sha256 for LFS files (else None), git blob id."""

    size: int
    sha256: str | None
    blob_id: str | None


@dataclass
class ExpectedManifest:
    """The files a complete download holds, at one commit."""

    commit: str
    files: dict[str, ExpectedFile] = field(default_factory=dict)
    source: Literal["hub", "cache"] = "hub"

    @property
    def total_size(self) -> int:
        """Sum of the expected file sizes."""
        return sum(f.size for f in self.files.values())

    def filtered(self, include: tuple[str, ...] | list[str]) -> ExpectedManifest:
        """The manifest restricted to paths matching the include patterns (all when none)."""
        keep = set(filter_include(self.files, include))
        return ExpectedManifest(self.commit, {p: f for p, f in self.files.items() if p in keep}, self.source)


def _pattern(p: str) -> str:
    p = p.replace("\\", "/")
    return p + "*" if p.endswith("/") else p


def filter_include(paths, patterns) -> list[str]:
    """Paths matching any pattern (all paths when there are none): fnmatchcase, `*` crosses `/`,
    a trailing `/` means everything below (huggingface_hub.utils.filter_repo_objects semantics)."""
    pats = [_pattern(p) for p in (patterns or ())]
    return [p for p in paths if not pats or any(fnmatchcase(p.replace("\\", "/"), q) for q in pats)]


def expected_online(model_id: str, revision: str = "main", include=(), endpoint: str | None = None,
                    token: str | None = None) -> ExpectedManifest:
    """The hub's file list for model_id at revision (resolved to a commit), filtered by include.

    Raises NodeError with the hub's reason on failure (not found, gated, rate-limited, unreachable).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    try:
        commit = api.model_info(model_id, revision=revision).sha
        entries = api.list_repo_tree(model_id, revision=commit, recursive=True)
        files = {e.path: ExpectedFile(size=e.lfs.size if e.lfs else e.size,
                                      sha256=e.lfs.sha256 if e.lfs else None, blob_id=e.blob_id)
                 for e in entries if isinstance(e, RepoFile)}
    except Exception as exc:  # noqa: BLE001 - any hub/HTTP failure becomes one line for the operator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NodeError(f"hub: cannot list {model_id}@{revision} at {endpoint or 'huggingface.co'}: "
                        f"{type(exc).__name__}: {first}") from None
    return ExpectedManifest(commit, files, "hub").filtered(tuple(include))


def expected_from_cache(manifest_result: dict, include=()) -> ExpectedManifest | None:
    """The expected manifest from a manifest probe's `tree` (hf's tree cache), or None when there is none."""
    tree = manifest_result.get("tree")
    if not tree or not tree.get("files"):
        return None
    files = {p: ExpectedFile(size=int(e["size"]), sha256=e.get("lfs_sha256"), blob_id=e.get("blob_id"))
             for p, e in tree["files"].items()}
    return ExpectedManifest(tree["commit"], files, "cache").filtered(tuple(include))
