"""The fake hub against the real `hf download` CLI, and each fault switch's failure (hf-hub-protocol.md §5)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.hub import HubHandle, git_blob_sha1, publish, start_hub, stop_hub
from sandbox.model import MODEL_ID, generate_model
from sandbox.procs import pid_matches

HF = str(Path(sys.executable).parent / "hf")
SHARD2 = "model-00002-of-00003.safetensors"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[HubHandle]:
    """A hub process serving the tiny model, on its own loopback address per xdist worker."""
    root = tmp_path_factory.mktemp("hub")
    generate_model(root / "model")
    publish(root / "repos", MODEL_ID, root / "model")
    host = f"127.0.9.{1 + os.getpid() % 250}"
    handle = start_hub(root / "repos", host, _free_port(host), root / "requests.jsonl", root / "hub.pid")
    yield handle
    stop_hub(root / "hub.pid", handle.host, handle.port)
    assert not pid_matches(handle.pid, ["sandbox.hub"]), "the hub process is gone after stop_hub"


@pytest.fixture(autouse=True)
def healthy(hub: HubHandle) -> Iterator[None]:
    hub.clear_faults()
    yield
    hub.clear_faults()


def hf_download(hub: HubHandle, dest: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real CLI, as the suite runs it on a node."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(dest.parent / f"{dest.name}.hfhome"), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([HF, "download", MODEL_ID, "--local-dir", str(dest), *extra], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and ".cache" not in p.parts}


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# -- protocol -------------------------------------------------------------------------------------

def test_revision_tree_and_resolve_follow_the_protocol(hub: HubHandle) -> None:
    status, _, body = _get(f"{hub.url}/api/models/{MODEL_ID}/revision/main")
    info = json.loads(body)
    assert status == 200 and info["id"] == MODEL_ID and len(info["sha"]) == 40
    sha = info["sha"]
    tree = json.loads(_get(f"{hub.url}/api/models/{MODEL_ID}/tree/{sha}?recursive=true&expand=false")[2])
    by_path = {e["path"]: e for e in tree}
    assert "lfs" in by_path[SHARD2] and by_path[SHARD2]["lfs"]["size"] == by_path[SHARD2]["size"]
    assert "lfs" not in by_path["config.json"]
    status, h, _ = _get(f"{hub.url}/{MODEL_ID}/resolve/{sha}/config.json", method="HEAD")
    assert status == 200 and h["X-Repo-Commit"] == sha and h["ETag"].strip('"') == by_path["config.json"]["oid"]
    status, h, body = _get(f"{hub.url}/{MODEL_ID}/resolve/main/config.json")
    assert git_blob_sha1(body) == by_path["config.json"]["oid"] and int(h["Content-Length"]) == len(body)
    status, h, body = _get(f"{hub.url}/{MODEL_ID}/resolve/main/config.json", {"Range": "bytes=10-"})
    assert status == 206 and h["Content-Range"].startswith("bytes 10-")
    assert len(body) == by_path["config.json"]["size"] - 10


def test_not_found_errors_carry_x_error_code(hub: HubHandle) -> None:
    assert _get(f"{hub.url}/api/models/nobody/nothing/revision/main")[1]["X-Error-Code"] == "RepoNotFound"
    assert _get(f"{hub.url}/api/models/{MODEL_ID}/revision/v9")[1]["X-Error-Code"] == "RevisionNotFound"
    status, h, _ = _get(f"{hub.url}/{MODEL_ID}/resolve/main/nope.bin", method="HEAD")
    assert status == 404 and h["X-Error-Code"] == "EntryNotFound" and "X-Repo-Commit" in h


def test_unknown_fault_is_refused(hub: HubHandle) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        hub.set_faults(flaky_dns=True)
    req = urllib.request.Request(f"{hub.url}/_sandbox/faults", data=b'{"slow_link_bps": -3}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400


def test_commit_follows_content_and_overrides(hub: HubHandle) -> None:
    base = hub.commit(MODEL_ID)
    index = json.loads(_get(f"{hub.url}/{MODEL_ID}/resolve/main/model.safetensors.index.json")[2])
    index["weight_map"]["lm_head.weight"] = "model-00004-of-00003.safetensors"
    hub.set_faults(override_files={"model.safetensors.index.json": json.dumps(index)})
    changed = hub.commit(MODEL_ID)
    assert changed != base
    served = json.loads(_get(f"{hub.url}/{MODEL_ID}/resolve/main/model.safetensors.index.json")[2])
    assert served["weight_map"]["lm_head.weight"] == "model-00004-of-00003.safetensors"
    hub.clear_faults()
    assert hub.commit(MODEL_ID) == base, "same content, same commit"


def test_requests_are_logged(hub: HubHandle) -> None:
    before = len(hub.requests())  # the hub is shared: earlier tests' requests are in the log too
    _get(f"{hub.url}/api/models/{MODEL_ID}/revision/main")
    deadline, hits = time.monotonic() + 5.0, []  # the hub writes its log line after answering: poll for it
    while not hits and time.monotonic() < deadline:
        hits = [r for r in hub.requests()[before:] if r["path"].endswith(f"/{MODEL_ID}/revision/main")]
        time.sleep(0.02)
    assert hits, f"no /revision/main in the request log: {hub.requests()[-3:]}"
    assert hits[-1]["status"] == 200 and hits[-1]["method"] == "GET"


# -- the real hf CLI ------------------------------------------------------------------------------

@pytest.mark.sandbox_run
def test_hf_download_full_and_include(hub: HubHandle, tmp_path: Path) -> None:
    r = hf_download(hub, tmp_path / "full", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(tmp_path / "full")
    served = {e["path"] for e in json.loads(_get(f"{hub.url}/api/models/{MODEL_ID}/tree/main?recursive=true")[2])}
    assert _files(tmp_path / "full") == served
    assert (tmp_path / "full/.cache/huggingface/trees" / f"{hub.commit(MODEL_ID)}.json").exists()
    r = hf_download(hub, tmp_path / "some", "--include", "*.json", "--include", "model-00001-*")
    assert r.returncode == 0, r.stderr
    got = _files(tmp_path / "some")
    assert "model-00001-of-00003.safetensors" in got and SHARD2 not in got and "tokenizer.json" in got


@pytest.mark.sandbox_run
def test_429_on_revision_fails_with_the_reason_and_an_empty_dir(hub: HubHandle, tmp_path: Path) -> None:
    hub.set_faults(rate_limit_429={"scope": "revision", "retry_after": 1})
    r = hf_download(hub, tmp_path / "d")
    assert r.returncode == 1 and "429" in r.stderr and "Too Many Requests" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists() or _files(tmp_path / "d") == set()


@pytest.mark.sandbox_run
def test_429_on_tree_is_retried_after_retry_after(hub: HubHandle, tmp_path: Path) -> None:
    hub.set_faults(rate_limit_429={"scope": "tree", "retry_after": 0, "times": 1})
    r = hf_download(hub, tmp_path / "d", "--include", "config.json")
    assert r.returncode == 0 and "Rate limited" in r.stderr, r.stderr
    assert [q["status"] for q in hub.requests() if "/tree/" in q["path"]][-2:] == [429, 200]


@pytest.mark.sandbox_run
def test_cut_body_fails_the_download(hub: HubHandle, tmp_path: Path) -> None:
    hub.set_faults(cut_body={"patterns": [SHARD2], "fraction": 0.5})
    r = hf_download(hub, tmp_path / "d", "--include", SHARD2)
    assert r.returncode != 0 and "peer closed connection" in r.stderr, r.stderr[-800:]
    assert not (tmp_path / "d" / SHARD2).exists()
    assert any(q["note"] == "fault:cut_body" for q in hub.requests())


@pytest.mark.sandbox_run
def test_missing_file_is_listed_but_404(hub: HubHandle, tmp_path: Path) -> None:
    hub.set_faults(missing_file=[SHARD2])
    r = hf_download(hub, tmp_path / "d", "--include", "*.safetensors")
    assert r.returncode != 0 and "File not found" in r.stderr, r.stderr
    assert not (tmp_path / "d" / SHARD2).exists()


@pytest.mark.sandbox_run
def test_slow_link_makes_it_take_longer(hub: HubHandle, tmp_path: Path) -> None:
    """The shard's body takes size / bps on a slow link, against hf's whole download (its own start included).

    Timed at the hub (its body time of the shard's GET), not around hf: hf's start alone takes seconds on a
    loaded host and varies by more than the link adds. Load can only lengthen a paced body, never shorten it."""
    size = json.loads(_get(f"{hub.url}/api/models/{MODEL_ID}/revision/main?blobs=true")[2])["siblings"]
    size = next(s["size"] for s in size if s["rfilename"] == SHARD2)
    path = f"/{MODEL_ID}/resolve/main/{SHARD2}"
    n0 = len(hub.requests())
    assert hf_download(hub, tmp_path / "fast", "--include", SHARD2).returncode == 0
    fast = _body_seconds(hub, n0, path, n=1)
    bps = size // 2  # about two seconds for the shard
    hub.set_faults(slow_link_bps=bps)
    n1 = len(hub.requests())
    t0 = time.monotonic()
    r = hf_download(hub, tmp_path / "slow", "--include", SHARD2)
    took = time.monotonic() - t0
    slow = _body_seconds(hub, n1, path, n=1)
    assert r.returncode == 0, r.stderr
    assert len(fast) == len(slow) == 1, (fast, slow)  # one GET of the shard each
    fast_s, slow_s = next(iter(fast.values())), next(iter(slow.values()))
    assert slow_s >= size / bps * 0.9 and took >= slow_s, (slow_s, took)  # hf waited for the paced body
    assert fast_s < slow_s, (fast_s, slow_s)  # the unthrottled body was not paced


def _timed_gets(hub: HubHandle, sources: list[str], path: str) -> None:
    """GET `path` at once from each source address (as separate clients would), bodies read to the end."""
    import http.client
    import threading

    errors: list[str] = []

    def one(src: str) -> None:
        try:
            c = http.client.HTTPConnection(hub.host, hub.port, timeout=60, source_address=(src, 0))
            c.request("GET", path)
            assert c.getresponse().read()
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(f"{src}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors


def _body_seconds(hub: HubHandle, since: int, path: str, n: int = 2) -> dict[str, float]:
    """Each client's body time for `path`, once the hub logged `n` of them (it logs after the last byte)."""
    from modeldrop.exo.wait import poll

    def same_file(logged: str) -> bool:  # hf asks by branch or by the commit it resolved: /org/m/resolve/<rev>/f
        return logged.split("/resolve/")[0] == path.split("/resolve/")[0] and \
            logged.split("/resolve/")[-1].partition("/")[2] == path.split("/resolve/")[-1].partition("/")[2]

    def look() -> dict[str, float]:
        return {r["node"]: r["body_s"] for r in hub.requests()[since:] if same_file(r["path"]) and "body_s" in r}
    return poll(look, lambda got: len(got) >= n, 10.0, 0.05).value or {}


@pytest.mark.sandbox_run
def test_node_links_give_each_client_its_own_line(hub: HubHandle) -> None:
    """Two clients at once: per-node links each carry their own rate; a shared link splits one rate."""
    sizes = json.loads(_get(f"{hub.url}/api/models/{MODEL_ID}/revision/main?blobs=true")[2])["siblings"]
    size = next(s["size"] for s in sizes if s["rfilename"] == SHARD2)
    bps = size  # about one second for the shard on one line
    path = f"/{MODEL_ID}/resolve/main/{SHARD2}"
    sources = [f"127.0.7.{11 + os.getpid() % 200}", f"127.0.7.{12 + os.getpid() % 200}"]
    hub.set_faults(node_link_bps=bps)
    n0 = len(hub.requests())
    _timed_gets(hub, sources, path)
    own = _body_seconds(hub, n0, path)
    hub.set_faults(slow_link_bps=bps)
    n1 = len(hub.requests())
    _timed_gets(hub, sources, path)
    shared = _body_seconds(hub, n1, path)
    assert sorted(k.rpartition("@")[2] for k in own) == sorted(sources), own  # two clients, told apart
    assert all(0.8 <= s <= 1.6 for s in own.values()), own  # each at its own line's full rate
    assert max(shared.values()) >= 1.8, shared  # one line: the later body waited for the other


def test_client_key_names_the_socket_owner(tmp_path: Path) -> None:
    from sandbox.hub import client_key
    table = tmp_path / "tcp"
    table.write_text("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
                     "   0: 0100007F:A000 0154007F:22C4 01 00000000:00000000 00:00000000 00000000     0 0 1\n")
    assert client_key(("127.0.0.1", 0xA000), ("127.0.84.1", 8900), table) == "root@127.0.0.1"
    assert client_key(("127.0.0.1", 0xA001), ("127.0.84.1", 8900), table) == "?@127.0.0.1"
    assert client_key(("127.0.0.1", 1), ("127.0.84.1", 8900), tmp_path / "absent") == "?@127.0.0.1"
