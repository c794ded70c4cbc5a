"""A sandbox hub (sandbox.hub) serving one generated model, for the hub/download tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests_selftest.support.modelfiles import make_model
from tests_selftest.support.sshd_fixture import free_port

REPO = "modeldrop/unit-model"


@dataclass
class HubForTests:
    handle: object
    url: str
    repo: str
    tree: dict


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[HubForTests]:
    hubmod = pytest.importorskip("sandbox.hub")
    root = tmp_path_factory.mktemp("hub")
    src = root / "src"
    tree = make_model(src, n_shards=3, shard_bytes=2 * 1024 * 1024, hf_cache=False)
    (src / "sub").mkdir()
    (src / "sub" / "extra.txt").write_text("nested")
    tree["sub/extra.txt"] = {"size": 6}
    hubmod.publish(root / "repos", REPO, src)
    host = f"127.0.98.{10 + os.getpid() % 200}"
    port = free_port(host)
    handle = hubmod.start_hub(root / "repos", host, port, root / "hub.log", root / "hub.pid")
    try:
        yield HubForTests(handle, handle.url, REPO, tree)
    finally:
        hubmod.stop_hub(root / "hub.pid", host, port)
