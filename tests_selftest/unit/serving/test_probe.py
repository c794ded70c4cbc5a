"""Probe `serving` on this host: exo's interpreter found as each install writes it and asked (bounded) for its
mlx-lm, EXO's built-in card, the memory EXO reports (Linux here; macOS from canned vm_stat output), the model dir's
own metadata. Fake installs in tmp dirs, the node's real python3."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeldrop import probes
from modeldrop.nodes import LocalNode
from modeldrop.probes import serving as probe

FOLDER = "org--m"


def fake_site(root: Path, version: str = "0.99.1", types=("llama", "qwen3")) -> Path:
    """A site dir with an mlx_lm (models, utils.MODEL_REMAPPING, a dist-info) whose import would fail loudly."""
    pkg = root / "mlx_lm"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the probe must not import mlx_lm')\n")
    (pkg / "utils.py").write_text('MODEL_REMAPPING = {\n    "mistral": "llama",\n}\nMAX_FILE_SIZE_GB = 5\n')
    for t in types:
        (pkg / "models" / f"{t}.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    info = root / f"mlx_lm-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mlx-lm\nVersion: {version}\n")
    return root


def fake_exo_checkout(root: Path, storage: int = 123_456) -> Path:
    """exo's source layout: src/exo/__init__.py and resources/ with a built-in card for FOLDER beside src/."""
    (root / "src" / "exo").mkdir(parents=True)
    (root / "src" / "exo" / "__init__.py").write_text("raise ImportError('the probe must not import exo')\n")
    cards = root / "resources" / "inference_model_cards"
    cards.mkdir(parents=True)
    (cards / f"{FOLDER}.toml").write_text(f'model_id = "org/m"\nn_layers = 28\nhidden_size = 1024\n\n'
                                          f"[storage_size]\nin_bytes = {storage}\n")
    return root / "src"


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run(exo_cmd: Path | str, model_dir: Path | str = "/nonexistent", ask_timeout: float = 20) -> dict:
    return LocalNode("node1").run_probe("serving", {"exo_cmd": str(exo_cmd), "model_dir": str(model_dir),
                                                    "model_folder": FOLDER, "ask_timeout": ask_timeout}, timeout=60)


def test_a_sh_console_script_is_asked_with_its_exec_lines_environment(tmp_path):
    """The sandbox's and pip's long-path console script: `#!/bin/sh` re-executing itself with `exec env K=V …
    PYTHON "$0"`. The variables of that line reach the ask (PYTHONPATH finds mlx_lm and exo here)."""
    site, src = fake_site(tmp_path / "site"), fake_exo_checkout(tmp_path / "exo")
    exo = script(tmp_path / "bin" / "exo", "#!/bin/sh\n# exo, like a console script\n"
                 f"''''exec env PYTHONPATH={site}:{src} OVERRIDE_MEMORY_MB=2048 {sys.executable} \"$0\" \"$@\" # '''\n"
                 "raise SystemExit('exo itself must not run')\n")
    r = run(exo)
    e = r["exo"]
    assert e["interpreter"] == sys.executable and e["env_keys"] == ["OVERRIDE_MEMORY_MB", "PYTHONPATH"]
    assert e["mlx_lm_version"] == "0.99.1" and e["model_types"] == ["llama", "qwen3"]
    assert e["remapping"] == {"mistral": "llama"} and e["mlx_lm_dir"] == str(site / "mlx_lm")
    assert e["builtin_card"] == {"path": str(tmp_path / "exo/resources/inference_model_cards/org--m.toml"),
                                 "storage_size": 123_456, "n_layers": 28}
    m = r["memory"]  # EXO's psutil path reports OVERRIDE_MEMORY_MB as ram_available
    assert m["available_bytes"] == 2048 * 1024 * 1024 and m["rule"].startswith("OVERRIDE_MEMORY_MB=2048")


def test_a_venv_console_script_is_asked_through_the_venv_not_its_resolved_python(tmp_path):
    """`#!<venv>/bin/python`: the venv's python is a symlink; resolved, it would leave the venv and its mlx_lm."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    fake_site(site, version="0.31.3", types=("llama", "deepseek_v3"))
    exo = script(tmp_path / "exo", f"#!{venv}/bin/python\nimport sys\nfrom exo.main import main\nsys.exit(main())\n")
    e = run(exo)["exo"]
    assert e["interpreter"] == f"{venv}/bin/python" and e["mlx_lm_version"] == "0.31.3"
    assert e["model_types"] == ["deepseek_v3", "llama"] and e["builtin_card"] is None


def test_a_frozen_exo_is_read_from_its_internal_dir(tmp_path):
    app = tmp_path / "EXO.app/Contents/Resources/exo"
    (app / "_internal").mkdir(parents=True)
    exo = app / "exo"
    exo.write_bytes(b"\x7fELF frozen")
    exo.chmod(0o755)
    fake_site(app / "_internal", types=("llama",))
    (app / "_internal" / "mlx_lm-0.99.1.dist-info").rename(app / "_internal" / "mlx_lm-0.30.0.dist-info")
    (app / "_internal" / "resources" / "inference_model_cards").mkdir(parents=True)
    e = run(exo)["exo"]
    assert e["how"].startswith("frozen build") and e["model_types"] == ["llama"] and e["mlx_lm_version"] == "0.30.0"
    (app / "_internal" / "mlx_lm" / "models" / "llama.py").unlink()
    (app / "_internal" / "mlx_lm" / "models" / "__init__.py").unlink()
    (app / "_internal" / "mlx_lm" / "models").rmdir()
    assert "keeps mlx_lm's modules inside its archive" in run(exo)["exo"]["error"]


def test_an_interpreter_that_does_not_answer_is_named_within_its_bound(tmp_path):
    hang = script(tmp_path / "python3", "#!/bin/sh\nexec sleep 30\n")
    exo = script(tmp_path / "exo", f"#!/bin/sh\nexec {hang} \"$0\" \"$@\"\n")
    t0 = time.monotonic()
    e = run(exo, ask_timeout=1)["exo"]
    assert time.monotonic() - t0 < 15
    assert e["error"] == f"{hang} did not answer within 1s" and "model_types" not in e


@pytest.mark.parametrize("case", ["no-mlx-lm", "missing", "no-interpreter"])
def test_an_exo_that_cannot_tell_its_mlx_lm_says_why(tmp_path, case):
    if case == "no-mlx-lm":
        exo, needle = script(tmp_path / "exo", "#!/usr/bin/python3 -I\n"), "/usr/bin/python3 has no mlx_lm"
    elif case == "missing":
        exo, needle = tmp_path / "nope" / "exo", f"{tmp_path}/nope/exo does not exist"
    else:
        exo, needle = script(tmp_path / "exo", "#!/bin/sh\necho hi\n"), "cannot tell which interpreter"
    r = run(exo)
    assert needle in r["exo"]["error"], r["exo"]
    assert r["memory"]["available_bytes"] > 0  # the memory still answers


def test_linux_memory_is_psutils_available_memavailable():
    m = run("/nonexistent")["memory"]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert m["platform"] == "linux" and m["rule"] == "psutil (MemAvailable)"
    assert m["total_bytes"] == int(meminfo["MemTotal"].split()[0]) * 1024
    assert 0 < m["available_bytes"] <= m["total_bytes"]


VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                5000.
Pages active:                            100000.
Pages inactive:                           90000.
Pages speculative:                         3000.
Pages throttled:                              0.
Pages wired down:                         40000.
Pages purgeable:                           2000.
"Translation faults":                 123456789.
Pages copy-on-write:                    1234567.
File-backed pages:                        60000.
Anonymous pages:                         133000.
Pages stored in compressor:               30000.
Pages occupied by compressor:             10000.
"""


@pytest.mark.parametrize("macmon", [True, False])
def test_macos_memory_follows_exo_macmon_or_psutil(monkeypatch, tmp_path, macmon):
    total = 128 * 1024 ** 3

    def fake_run(argv, **kw):
        out = VM_STAT if argv[0] == "/usr/bin/vm_stat" else f"{total}\n"
        return subprocess.CompletedProcess(argv, 0, out.encode(), b"")

    monkeypatch.setattr(probe.subprocess, "run", fake_run)
    env = {"EXO_MACMON_PATH": "/opt/macmon"} if macmon else {"PATH": str(tmp_path)}
    m = probe.darwin_memory(env, str(tmp_path / "exo"))
    used = (100000 + 90000 + 40000 + 3000 + 10000 - 2000 - 60000) * 16384  # macmon's ram_usage
    assert m["figures"] == {"macmon": total - used, "psutil": (90000 + 5000 + 3000) * 16384}
    assert m["available_bytes"] == (total - used if macmon else (90000 + 5000 + 3000) * 16384)
    assert m["rule"].startswith("macmon" if macmon else "psutil")


def test_the_model_dirs_own_metadata_is_read(tmp_path):
    d = tmp_path / FOLDER
    (d / ".cache/huggingface/download").mkdir(parents=True)
    (d / ".cache/huggingface/trees").mkdir(parents=True)
    (d / "config.json").write_text("{not json")
    index = json.dumps({"metadata": {"total_size": 99}, "weight_map": {"a": "model-1.safetensors"}})
    (d / "model.safetensors.index.json").write_text(index)
    (d / "model-1.safetensors").write_bytes(b"x" * 120)
    (d / ".cache/huggingface/download/model-1.safetensors.metadata").write_text("c0ffee\netag\n1\n")
    (d / ".cache/huggingface/trees/c0ffee.json").write_text(json.dumps(
        {"files": {"model-1.safetensors": {"size": 120}, "config.json": {"size": 9}}}))
    local = run("/nonexistent", d)["local"]
    assert local["files"] == {"config.json": 9, "model-1.safetensors": 120, "model.safetensors.index.json": len(index)}
    assert local["config"] is None and local["config_error"].startswith("JSONDecodeError")
    assert local["index"]["total_size"] == 99 and local["index"]["weight_files"] == ["model-1.safetensors"]
    assert local["tree"]["commit"] == "c0ffee" and set(local["tree"]["files"]) == {"model-1.safetensors",
                                                                                   "config.json"}


def test_the_ask_leaves_no_bytecode_behind(tmp_path):
    site = fake_site(tmp_path / "site")
    exo = script(tmp_path / "exo", f"#!/bin/sh\nexec env PYTHONPATH={site} {sys.executable} \"$0\" \"$@\"\n")
    run(exo)
    assert not list(tmp_path.rglob("__pycache__"))
    src = probes.probe_source("serving")
    assert "def launch_of" in src and "def read_tree" in src and "def _reexec_interpreter" in src
