"""Probe `serving`: {exo_cmd, model_dir, model_folder, ask_timeout} -> what this node brings to "will it serve?".

Result: {memory, exo, local}.
- `memory` {platform, total_bytes, available_bytes, rule, figures, error}: the node's memory as EXO reports it
  for placement (`ram_available`): Linux, psutil's `available` (MemAvailable); macOS, macmon's `ram_total -
  ram_usage` (active + inactive + wired + speculative + compressor - purgeable - file-backed pages) when a macmon
  EXO would use is found (EXO_MACMON_PATH, PATH, Homebrew, beside exo), else psutil's (inactive + free);
  OVERRIDE_MEMORY_MB in exo's environment replaces psutil's figure as EXO does.
- `exo` {interpreter, how, mlx_lm_version, mlx_lm_dir, model_types, remapping, builtin_card, error}: the model
  modules (`mlx_lm.models.<type>`) and MODEL_REMAPPING of the mlx-lm that exo at exo_cmd imports, asked of the
  interpreter exo runs with (a `#!` script's, or a `#!/bin/sh` script's `exec [env K=V …] PYTHON "$0"` line,
  with that line's environment) in one bounded call that imports nothing but the standard library; a frozen
  exo (EXO.app's PyInstaller build) is read from its `_internal/` instead. `builtin_card` {path, storage_size,
  n_layers} is EXO's built-in card for model_folder (`resources/inference_model_cards/<folder>.toml`, found
  as EXO finds its resources), else None.
- `local` {expanded, files {rel: size}, config, config_error, index, tree}: what model_dir already holds: its
  files (without hf's cache and macOS litter), config.json parsed, the weight index (`read_index`) and the hub
  tree hf cached (`read_tree`). Runs with the `_proc`, `procs` and `manifest` probes' helpers prepended.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

if "SHELLS" not in globals():  # imported as a module (tests); on a node the helpers are prepended
    from modeldrop.probes.manifest import CACHE_PREFIX, is_litter, nfc, read_index, read_metadata, read_tree, walk
    from modeldrop.probes.procs import SHELLS, _reexec_interpreter

MAX_CONFIG_BYTES = 4 * 1024 * 1024
ASK = r"""
import ast, importlib.util, json, os, sys
out = {"python": sys.executable}
try:
    spec = importlib.util.find_spec("mlx_lm")
except Exception as e:
    spec = None
    out["error"] = "%s: %s" % (type(e).__name__, e)
if spec is not None and spec.submodule_search_locations:
    out["mlx_lm_dir"] = list(spec.submodule_search_locations)[0]
    try:
        import importlib.metadata as md
        out["mlx_lm_version"] = md.version("mlx-lm")
    except Exception:
        out["mlx_lm_version"] = None
try:
    spec = importlib.util.find_spec("exo")
    out["exo_origin"] = spec.origin if spec is not None else None
except Exception:
    out["exo_origin"] = None
sys.stdout.write(json.dumps(out))
"""


# -- memory -------------------------------------------------------------------------------------------
def linux_memory(env: dict) -> dict:
    """MemTotal and MemAvailable (psutil's `available`), or EXO's OVERRIDE_MEMORY_MB."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    out = {"total_bytes": info.get("MemTotal"), "available_bytes": info.get("MemAvailable"),
           "rule": "psutil (MemAvailable)", "figures": {"MemAvailable": info.get("MemAvailable"),
                                                        "MemFree": info.get("MemFree")}}
    return override(out, env)


def override(out: dict, env: dict) -> dict:
    """EXO's psutil path reports OVERRIDE_MEMORY_MB (MiB) as ram_available when its environment sets it."""
    raw = (env.get("OVERRIDE_MEMORY_MB") or "").strip()
    if raw.isdigit():
        out["figures"]["psutil"] = out.get("available_bytes")
        out["available_bytes"] = int(raw) * 1024 * 1024
        out["rule"] = "OVERRIDE_MEMORY_MB=%s in exo's environment" % raw
    return out


def vm_stat() -> dict:
    """`vm_stat` as {label: pages} plus `page_size`."""
    text = subprocess.run(["/usr/bin/vm_stat"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          timeout=10, check=False).stdout.decode("utf-8", "replace")
    out = {}
    m = re.search(r"page size of (\d+) bytes", text)
    out["page_size"] = int(m.group(1)) if m else 4096
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip().rstrip(".")
        if value.isdigit():
            out[key.strip().strip('"')] = int(value)
    return out


def find_macmon(env: dict, exo_real: str):
    """The macmon EXO would use: EXO_MACMON_PATH, else `macmon` on exo's PATH (Homebrew's prefixed, as EXO.app
    does), else one beside exo's executable."""
    if env.get("EXO_MACMON_PATH"):
        return env["EXO_MACMON_PATH"]
    path = ":".join(["/opt/homebrew/bin", env.get("PATH") or "", os.path.expanduser("~/.cargo/bin")])
    found = shutil.which("macmon", path=path)
    beside = os.path.join(os.path.dirname(exo_real), "macmon")
    return found or (beside if os.access(beside, os.X_OK) else None)


def darwin_memory(env: dict, exo_real: str) -> dict:
    """macmon's figure when EXO would use macmon, else psutil's (see the module docstring)."""
    total = int(subprocess.run(["/usr/sbin/sysctl", "-n", "hw.memsize"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=10, check=True).stdout.decode().strip())
    vm = vm_stat()
    page = vm["page_size"]

    def pages(label: str) -> int:
        return int(vm.get(label) or 0)

    used = (pages("Pages active") + pages("Pages inactive") + pages("Pages wired down") + pages("Pages speculative")
            + pages("Pages occupied by compressor") - pages("Pages purgeable") - pages("File-backed pages")) * page
    psutil_avail = (pages("Pages inactive") + pages("Pages free") + pages("Pages speculative")) * page
    macmon = find_macmon(env, exo_real)
    out = {"total_bytes": total, "figures": {"macmon": total - used, "psutil": psutil_avail}, "macmon": macmon}
    if macmon:
        out.update(available_bytes=total - used, rule="macmon (ram_total - ram_usage)")
        return out
    out.update(available_bytes=psutil_avail, rule="psutil (inactive + free): no macmon for EXO on this node")
    return override(out, env)


def memory(env: dict, exo_real: str) -> dict:
    """This node's memory as EXO reports it; `error` when it cannot be read."""
    plat = "darwin" if sys.platform == "darwin" else ("linux" if sys.platform.startswith("linux") else sys.platform)
    try:
        out = darwin_memory(env, exo_real) if plat == "darwin" else linux_memory(env)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        out = {"error": "%s: %s" % (type(exc).__name__, exc)}
    out["platform"] = plat
    return out


# -- exo's interpreter and its mlx-lm -------------------------------------------------------------------
def launch_of(path: str) -> dict:
    """How running `path` starts Python: {binary} (a frozen exo), {interpreter, env} with the interpreter as its
    `#!` line or a `#!/bin/sh` script's first `exec [env K=V …] PYTHON "$0"` line writes it (a venv's python is
    a symlink: resolving it would leave the venv) and that line's K=V words, or {env_name} for `#!/usr/bin/env`."""
    real = os.path.realpath(path)
    with open(real, "rb") as f:
        lines = f.read(8192).split(b"\n")
    words = lines[0][2:].decode("utf-8", "replace").split() if lines[0].startswith(b"#!") else []
    if not words:
        return {"binary": real}
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return {"env_name": names[0] if names else None, "env": {}}
    if os.path.basename(words[0]) not in SHELLS:
        return {"interpreter": words[0], "env": {}}
    code = [x for x in lines[1:] if x.strip() and not x.lstrip().startswith(b"#")][:1]
    interp = _reexec_interpreter(code[0]) if code else None
    try:
        exec_words = shlex.split(code[0].decode("utf-8", "replace"), comments=True) if interp else []
    except ValueError:
        exec_words = []
    exec_words = exec_words[1:exec_words.index("$0")] if "$0" in exec_words else []
    if exec_words and os.path.basename(exec_words[0]) == "env":
        exec_words = exec_words[1:]
    env = dict(w.split("=", 1) for w in exec_words if "=" in w and not w.startswith("-"))
    return {"interpreter": interp, "env": env}


def model_modules(models_dir: str) -> list:
    """The module names under mlx_lm/models (`<name>.py`, `<name>.pyc`, packages)."""
    names = set()
    for entry in os.listdir(models_dir):
        full = os.path.join(models_dir, entry)
        if entry.endswith((".py", ".pyc")) and not entry.startswith("__"):
            names.add(entry.rsplit(".", 1)[0])
        elif os.path.isfile(os.path.join(full, "__init__.py")):
            names.add(entry)
    return sorted(names)


def remapping(mlx_lm_dir: str) -> dict:
    """mlx_lm.utils.MODEL_REMAPPING, read from its source (never imported)."""
    import ast
    try:
        with open(os.path.join(mlx_lm_dir, "utils.py"), "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODEL_REMAPPING" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def card_of(resources: str, folder: str):
    """EXO's built-in card for folder under resources/ ({path, storage_size, n_layers}), else None."""
    path = os.path.join(resources, "inference_model_cards", folder + ".toml")
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    size = re.search(r"^\[storage_size\]\s*\n\s*in_bytes\s*=\s*(\d+)", text, re.M)
    layers = re.search(r"^n_layers\s*=\s*(\d+)", text, re.M)
    return {"path": path, "storage_size": int(size.group(1)) if size else None,
            "n_layers": int(layers.group(1)) if layers else None}


def resources_dir(env: dict, exo_origin):
    """Where EXO finds its resources: ~/$EXO_RESOURCES_DIR, else the first `resources` dir above its package."""
    if env.get("EXO_RESOURCES_DIR"):
        return os.path.join(os.path.expanduser("~"), env["EXO_RESOURCES_DIR"])
    d = os.path.dirname(os.path.realpath(exo_origin)) if exo_origin else None
    while d and os.path.dirname(d) != d:
        if os.path.isdir(os.path.join(d, "resources")):
            return os.path.join(d, "resources")
        d = os.path.dirname(d)
    return None


def frozen(binary: str, folder: str) -> dict:
    """A frozen exo (PyInstaller onedir): mlx-lm and resources from `_internal/` beside the binary."""
    internal = os.path.join(os.path.dirname(binary), "_internal")
    out = {"how": "frozen build (%s)" % internal}
    if not os.path.isdir(internal):
        out["error"] = "%s is a binary, not a Python script, and has no _internal/ beside it" % binary
        return out
    models = os.path.join(internal, "mlx_lm", "models")
    infos = sorted(n for n in os.listdir(internal) if re.match(r"mlx_lm-.*\.dist-info$", n))
    out["mlx_lm_version"] = infos[0][len("mlx_lm-"):-len(".dist-info")] if infos else None
    if os.path.isdir(models):
        out["mlx_lm_dir"] = os.path.join(internal, "mlx_lm")
        out["model_types"] = model_modules(models)
        out["remapping"] = remapping(out["mlx_lm_dir"])
    else:
        out["error"] = "the frozen exo at %s keeps mlx_lm's modules inside its archive: they cannot be listed" % binary
    out["builtin_card"] = card_of(os.path.join(internal, "resources"), folder)
    return out


def ask_interpreter(interp: str, env: dict, timeout: float) -> dict:
    """Run ASK with exo's interpreter in exo's environment; {error} when it cannot be asked."""
    run_env = dict(os.environ)
    run_env.update(env)
    run_env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        r = subprocess.run([interp, "-c", ASK], env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "%s did not answer within %gs" % (interp, timeout)}
    except OSError as exc:
        return {"error": "%s cannot run: %s" % (interp, exc.strerror or exc)}
    try:
        return json.loads(r.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"error": "%s exited %d: %s" % (interp, r.returncode, err[-1] if err else "no output")}


def exo_runtime(exo_cmd: str, folder: str, timeout: float) -> tuple:
    """({interpreter, how, mlx_lm_*, model_types, remapping, builtin_card, error}, exo's environment)."""
    path = os.path.expanduser(exo_cmd)
    if not os.path.exists(path):
        return {"error": "%s does not exist" % exo_cmd}, {}
    try:
        launch = launch_of(path)
    except OSError as exc:
        return {"error": "%s cannot be read: %s" % (exo_cmd, exc.strerror or exc)}, {}
    if "binary" in launch:
        return frozen(launch["binary"], folder), {}
    env = launch.get("env") or {}
    interp = launch.get("interpreter") or (shutil.which(launch["env_name"]) if launch.get("env_name") else None)
    if not interp:
        return {"error": "cannot tell which interpreter %s runs with" % exo_cmd}, env
    out = {"interpreter": interp, "how": "asked %s (exo's interpreter)" % interp, "env_keys": sorted(env)}
    answer = ask_interpreter(interp, env, timeout)
    out.update(answer)
    mlx_dir = answer.get("mlx_lm_dir")
    if mlx_dir and os.path.isdir(os.path.join(mlx_dir, "models")):
        out["model_types"] = model_modules(os.path.join(mlx_dir, "models"))
        out["remapping"] = remapping(mlx_dir)
    elif not answer.get("error"):
        out["error"] = "%s has no mlx_lm (exo's runners could not load any model)" % interp
    res = resources_dir(env, answer.get("exo_origin"))
    out["resources_dir"] = res
    out["builtin_card"] = card_of(res, folder) if res else None
    return out, env


# -- what the model dir already holds -------------------------------------------------------------------
def local_model(path: str) -> dict:
    """Files, config.json, index and cached hub tree of the model dir (see the module docstring)."""
    expanded = os.path.abspath(os.path.expanduser(path))
    out = {"expanded": expanded, "files": {}, "config": None, "config_error": None, "index": None, "tree": None}
    if not os.path.isdir(expanded):
        return out
    metadata, cache_files = {}, []
    for raw, st in walk(expanded):
        rel = nfc(raw)
        if rel.startswith(CACHE_PREFIX):
            cache_files.append({"path": rel})
            if rel.startswith(CACHE_PREFIX + "download/") and rel.endswith(".metadata"):
                metadata[rel[len(CACHE_PREFIX + "download/"):-len(".metadata")]] = read_metadata(expanded, raw)
        elif not is_litter(rel):
            out["files"][rel] = st.st_size
    if "config.json" in out["files"]:
        try:
            with open(os.path.join(expanded, "config.json"), "rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
            if len(data) > MAX_CONFIG_BYTES:
                raise ValueError("larger than %d bytes" % MAX_CONFIG_BYTES)
            out["config"] = json.loads(data.decode("utf-8"))
        except (OSError, ValueError) as exc:
            out["config_error"] = "%s: %s" % (type(exc).__name__, exc)
    out["index"] = read_index(expanded, list(out["files"]))
    live = dict((k, v) for k, v in metadata.items() if k in out["files"])
    out["tree"] = read_tree(expanded, live, cache_files)
    return out


def main(args: dict) -> dict:
    """Memory, exo's mlx-lm and built-in card, and the model dir's own metadata, in one round trip."""
    timeout = float(args.get("ask_timeout") or 30)
    exo, env = exo_runtime(args["exo_cmd"], args["model_folder"], timeout)
    merged = dict(os.environ)
    merged.update(env)
    exe = os.path.realpath(os.path.expanduser(args["exo_cmd"]))
    return {"memory": memory(merged, exe), "exo": exo, "local": local_model(args["model_dir"])}
