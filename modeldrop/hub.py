"""The expected manifest of a model repo at a commit: from the hub (HfApi) or from a node's hf tree cache.

`expected_online` asks the hub on the control host (model_info for the commit, then the recursive tree at
that commit; `expected_for(cfg)` asks it as the run configures it, `expectation_for(cfg)` is what the gates
check files against); `expected_from_cache` reads the `tree` the `manifest` probe found in the model dir's
`.cache/huggingface/trees/<commit>.json` (offline). Both give an `ExpectedManifest` that `audit.completeness`
checks the files against. `filter_include` applies `--include` (and `filter_exclude` `--exclude`) patterns with
hf's own semantics.

Every hub look-up is bounded in total by `lookup_timeout(stall window)`: at most `HUB_TIMEOUT_S`, less when the
operator's stall window is shorter (huggingface_hub's own client has no timeout and retries), so a hub that
accepts connections and never answers costs one window. `listing_once` makes the look-up of the repo's file list
once per run, whatever its outcome (`total_size`, the download total, and the serving verdict read it);
`fetch_json` reads one small JSON file of the repo (config.json, the weight index). A token is only sent to an
https endpoint or a loopback one unless the
operator allows an insecure hub explicitly (`insecure_endpoint_problem`).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from modeldrop import httpdeadline
from modeldrop.config import RunConfig
from modeldrop.errors import InputError, NodeError

HUB_TIMEOUT_S = 60.0


def lookup_timeout(stall_window_s: float | None) -> float:
    """The total bound of one hub look-up: HUB_TIMEOUT_S, or the stall window when that is shorter."""
    return min(HUB_TIMEOUT_S, float(stall_window_s)) if stall_window_s else HUB_TIMEOUT_S
INSECURE_HUB_OPTION = "--allow-insecure-hub"

T = TypeVar("T")


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

    def filtered(self, include: tuple[str, ...] | list[str],
                 exclude: tuple[str, ...] | list[str] = ()) -> ExpectedManifest:
        """The manifest restricted to paths matching the include patterns (all when none) and no exclude pattern."""
        keep = set(filter_exclude(filter_include(self.files, include), exclude))
        return ExpectedManifest(self.commit, {p: f for p, f in self.files.items() if p in keep}, self.source)


def _pattern(p: str) -> str:
    p = p.replace("\\", "/")
    return p + "*" if p.endswith("/") else p


def filter_include(paths, patterns) -> list[str]:
    """Paths matching any pattern (all paths when there are none): fnmatchcase, `*` crosses `/`,
    a trailing `/` means everything below (huggingface_hub.utils.filter_repo_objects semantics)."""
    pats = [_pattern(p) for p in (patterns or ())]
    return [p for p in paths if not pats or any(fnmatchcase(p.replace("\\", "/"), q) for q in pats)]


def filter_exclude(paths, patterns) -> list[str]:
    """Paths matching none of the `--exclude` patterns (same pattern semantics as `filter_include`)."""
    pats = [_pattern(p) for p in (patterns or ())]
    return [p for p in paths if not any(fnmatchcase(p.replace("\\", "/"), q) for q in pats)]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_endpoint_problem(endpoint: str | None, token: str | None, allow_insecure: bool) -> str | None:
    """Why HF_TOKEN must not go to `endpoint` (plain http to a non-loopback host without the explicit
    option, or a scheme that is neither http nor https), else None. No token, no problem."""
    if not token or not endpoint:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme == "https" or (parts.scheme == "http" and (allow_insecure or _is_loopback(parts.hostname or ""))):
        return None
    if parts.scheme not in ("http", "https"):
        return f"HF_ENDPOINT {endpoint!r}: expected an http(s) URL"
    return (f"HF_ENDPOINT {endpoint!r} is plain http to a non-loopback host: HF_TOKEN would travel unencrypted; "
            f"use https, or pass {INSECURE_HUB_OPTION} (ALLOW_INSECURE_HUB=1) to send it anyway")


def node_endpoint_problem(configured: str | None, node_env: str | None, token: str | None,
                          allow_insecure: bool) -> str | None:
    """Why HF_TOKEN must not go where `hf` or exo on a node would send it: the configured HF_ENDPOINT, else the
    one the node's own shell environment sets (`node_env`, from the facts probe); None when it may."""
    if configured:
        return insecure_endpoint_problem(configured, token, allow_insecure)
    if insecure_endpoint_problem(node_env, token, allow_insecure) is None:
        return None
    why = ("is not an http(s) URL" if urlsplit(str(node_env)).scheme not in ("http", "https")
           else "is plain http to a non-loopback host: HF_TOKEN would travel unencrypted")
    return (f"HF_ENDPOINT {node_env!r} comes from the node's own shell environment (hf and exo use it when the run "
            f"sets none) and {why}; set an https HF_ENDPOINT in the env file, remove it from that node's shell "
            f"profile, or pass {INSECURE_HUB_OPTION} to send the token anyway")


def check_endpoint(endpoint: str | None, token: str | None, allow_insecure: bool) -> None:
    """Raise InputError (one line) when insecure_endpoint_problem finds one."""
    problem = insecure_endpoint_problem(endpoint, token, allow_insecure)
    if problem:
        raise InputError(problem)


def bounded(call, timeout_s: float, what: str) -> Any:
    """call() in a daemon thread, waiting at most timeout_s: NodeError naming `what` when it does not return
    (the thread is left to the silent endpoint; it holds no lock of ours). Exceptions pass through."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=run, name="hub-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise NodeError(f"{what}: no answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass(frozen=True)
class HubExpectation:
    """What the hub says the files should be: its manifest (online), or None with the hub's error or
    offline (both None)."""

    manifest: ExpectedManifest | None = None
    error: str | None = None


HUB_ATTEMPTS = 3


def transient(exc: BaseException) -> bool:
    """A hub failure worth retrying: rate limit (429), a 5xx, or the connection dropping or timing out."""
    import requests

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError))


def _hub_retry(fn: Callable[[], T]) -> T:
    """fn() with up to HUB_ATTEMPTS tries on transient hub errors (exponential wait 0.5..4 s); the last error is
    raised."""
    retrying = Retrying(stop=stop_after_attempt(HUB_ATTEMPTS), wait=wait_exponential(multiplier=0.5, max=4),
                        retry=retry_if_exception(transient), reraise=True)
    return retrying(fn)


def expected_for(cfg: RunConfig, timeout_s: float | None = None) -> ExpectedManifest:
    """The hub's manifest of the run's model: `expected_online` at HF_REVISION with HF_INCLUDE, through the
    configured endpoint and token, within timeout_s (default: the run's look-up bound, `lookup_timeout`);
    raises as `expected_online` does."""
    timeout_s = lookup_timeout(cfg.stall_window_s) if timeout_s is None else timeout_s
    return expected_online(cfg.model_id, revision=cfg.hf_revision, include=cfg.include, endpoint=cfg.hf_endpoint,
                           token=cfg.hf_token, timeout_s=timeout_s, allow_insecure=cfg.allow_insecure_hub,
                           exclude=cfg.exclude)


def expectation_for(cfg: RunConfig) -> HubExpectation:
    """What the gates check files against: the hub's manifest with `--online` (its error, in one line, when the
    hub cannot be read), else nothing (offline: each node's cached tree is used)."""
    if not cfg.online:
        return HubExpectation()
    try:
        return HubExpectation(manifest=expected_for(cfg))
    except Exception as e:  # noqa: BLE001 - the hub's reason becomes part of the gate's failure
        return HubExpectation(error=f"{type(e).__name__}: {e}".splitlines()[0])


def expected_online(model_id: str, revision: str = "main", include=(), endpoint: str | None = None,
                    token: str | None = None, *, timeout_s: float = HUB_TIMEOUT_S,
                    allow_insecure: bool = False, exclude=()) -> ExpectedManifest:
    """The hub's file list for model_id at revision (resolved to a commit), filtered by include and exclude.

    Transient failures (429, 5xx, connection) are retried (tenacity). Raises NodeError with the hub's
    reason on failure (not found, gated, rate-limited, unreachable, no answer within timeout_s for both
    calls and their retries together); InputError when the token may not go to endpoint.
    """
    check_endpoint(endpoint, token, allow_insecure)
    where = f"hub: cannot list {model_id}@{revision} at {endpoint or 'huggingface.co'}"
    try:
        commit, files = bounded(lambda: _list_online(model_id, revision, endpoint, token), timeout_s, where)
    except NodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any hub/HTTP failure becomes one line for the operator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NodeError(f"{where}: {type(exc).__name__}: {first}") from None
    return ExpectedManifest(commit, files, "hub").filtered(tuple(include), tuple(exclude))


def _list_online(model_id: str, revision: str, endpoint: str | None,
                 token: str | None) -> tuple[str, dict[str, ExpectedFile]]:
    """(commit, files) straight from the hub (unbounded: see expected_online)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    commit = _hub_retry(lambda: api.model_info(model_id, revision=revision).sha)
    entries = _hub_retry(lambda: list(api.list_repo_tree(model_id, revision=commit, recursive=True)))
    files = {e.path: ExpectedFile(size=e.lfs.size if e.lfs else e.size,
                                  sha256=e.lfs.sha256 if e.lfs else None, blob_id=e.blob_id)
             for e in entries if isinstance(e, RepoFile)}
    return commit, files


@functools.lru_cache(maxsize=32)
def listing_once(model_id: str, revision: str, endpoint: str | None, token: str | None, allow_insecure: bool,
                 timeout_s: float) -> HubExpectation:
    """The repo's whole file list (no include filter) from the hub, or the hub's error in one line; asked once
    per run and arguments, a failure included (the download total and the serving verdict share it)."""
    try:
        return HubExpectation(manifest=expected_online(model_id, revision, (), endpoint, token, timeout_s=timeout_s,
                                                       allow_insecure=allow_insecure))
    except Exception as e:  # noqa: BLE001 - the hub's reason, one line, for whoever needs the list
        return HubExpectation(error=f"{type(e).__name__}: {e}".splitlines()[0])


def total_size(model_id: str, revision: str, include: tuple[str, ...], endpoint: str | None, token: str | None,
               allow_insecure: bool, timeout_s: float, exclude: tuple[str, ...] = ()) -> int | None:
    """The bytes a complete download holds, from the hub (None when the hub does not tell within timeout_s);
    asked once per run and arguments, a failure included (`listing_once`)."""
    listed = listing_once(model_id, revision, endpoint, token, allow_insecure, timeout_s).manifest
    return listed.filtered(include, exclude).total_size if listed is not None else None


def listing_for(cfg: RunConfig) -> HubExpectation:
    """`listing_once` for the run's model, revision, endpoint and token, within the run's look-up bound."""
    return listing_once(cfg.model_id, cfg.hf_revision, cfg.hf_endpoint, cfg.hf_token, cfg.allow_insecure_hub,
                        lookup_timeout(cfg.stall_window_s))


def fetch_json(cfg: RunConfig, commit: str, filename: str, limit_bytes: int) -> tuple[Any, str | None]:
    """(parsed JSON, None) of one small file of the run's repo at `commit` (config.json, the weight index), or
    (None, why) in one line: `missing` when the hub has no such file, else the HTTP or parse error. Bounded by
    the run's look-up bound; the token only goes where `insecure_endpoint_problem` allows."""
    from huggingface_hub import hf_hub_url

    check_endpoint(cfg.hf_endpoint, cfg.hf_token, cfg.allow_insecure_hub)
    url = hf_hub_url(cfg.model_id, filename, revision=commit, endpoint=cfg.hf_endpoint)
    headers = {"authorization": f"Bearer {cfg.hf_token}"} if cfg.hf_token else {}
    try:
        r = httpdeadline.request("GET", url, total_s=lookup_timeout(cfg.stall_window_s), headers=headers)
    except Exception as e:  # noqa: BLE001 - a look-up that failed is one line
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    if r.status_code == 404:
        return None, "missing"
    if r.status_code != 200:
        return None, f"HTTP {r.status_code} from the hub"
    if len(r.content) > limit_bytes:
        return None, f"larger than {limit_bytes} bytes ({len(r.content)})"
    try:
        return json.loads(r.content.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"not JSON ({type(e).__name__}: {e})".splitlines()[0]


def expected_from_cache(manifest_result: dict, include=(), exclude=()) -> ExpectedManifest | None:
    """The expected manifest from a manifest probe's `tree` (hf's tree cache), or None when there is none."""
    tree = manifest_result.get("tree")
    if not tree or not tree.get("files"):
        return None
    files = {p: ExpectedFile(size=int(e["size"]), sha256=e.get("lfs_sha256"), blob_id=e.get("blob_id"))
             for p, e in tree["files"].items()}
    return ExpectedManifest(tree["commit"], files, "cache").filtered(tuple(include), tuple(exclude))
