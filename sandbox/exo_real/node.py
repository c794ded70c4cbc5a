"""What the sandbox writes for a node that runs real EXO: its `exo` entry point and node files.

Contract: `entry_point(install, k, env, lib_dir, config)` is the text of node k's `exo`, a
console-script-like file: `/bin/sh` runs its first line, which re-executes the file with the
install's Python and the node's environment (the interpreter needs LD_LIBRARY_PATH before it can
start, so a `#!python` line cannot work); Python then reads it as a script that applies
`modeldrop_exo_node` (bind and advertise only the node's address; fault switches from `config`)
and calls EXO's own `exo.main:main`. Runner processes re-import the file as `__mp_main__`: they
get the patches, never a second `main()`.
`stage_node_files(lib_dir)` copies the stand-ins and the node shim there (world-readable).
`resources_with_card(install, dest, card_name, card_text)` is a copy of EXO's `resources/` with
the card added, for `EXO_RESOURCES_DIR` (a built-in card; EXO deletes custom card files it did
not sync).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from sandbox.exo_real.install import Install

STANDIN = Path(__file__).resolve().parent / "standin"


def entry_point(install: Install, k: int, env: dict[str, str], lib_dir: Path, config: Path) -> str:
    """Node k's `exo` (see the module docstring); `env` holds the node's variables."""
    full = {**install.env, **env}
    line = ("''''exec env " + " ".join(f"{a}={shlex.quote(b)}" for a, b in full.items())
            + f' {shlex.quote(str(install.python))} "$0" "$@" # \'\'\'')
    if line.count("'''") != 2:
        raise ValueError(f"node {k}'s exo entry point cannot quote {full!r}")
    return "\n".join([
        "#!/bin/sh",
        f"# exo of sandbox node {k}: real EXO {install.generation} ({install.source}), like a console script",
        line,
        "import sys",
        f"sys.path.insert(0, {str(lib_dir)!r})",
        "import modeldrop_exo_node",
        "modeldrop_exo_node.apply(runner=__name__ == '__mp_main__')",
        "if __name__ == '__main__':",
        f"    modeldrop_exo_node.load_faults({str(config)!r})",
        "    from exo.main import main",
        "    sys.exit(main())",
        ""])


def stage_node_files(lib_dir: Path) -> None:
    """Copy sandbox/exo_real/standin/*.py to `lib_dir` (0755 dir, 0644 files), replacing what is there."""
    new = lib_dir.with_name(f".{lib_dir.name}.new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    for src in STANDIN.glob("*.py"):
        shutil.copy2(src, new / src.name)
        (new / src.name).chmod(0o644)
    new.chmod(0o755)
    old = lib_dir.with_name(f".{lib_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if lib_dir.exists():
        os.replace(lib_dir, old)
    os.replace(new, lib_dir)
    shutil.rmtree(old, ignore_errors=True)


def card_for_generation(card_text: str, generation: str) -> str:
    """The card as `generation`'s EXO accepts it: v1.0.71's ModelCard forbids fields it does not know
    (`backends` came later), and an invalid card is skipped silently."""
    if generation != "old":
        return card_text
    return "".join(line for line in card_text.splitlines(keepends=True) if not line.startswith("backends ="))


def resources_with_card(install: Install, dest: Path, card_name: str, card_text: str) -> Path:
    """`dest`: EXO's resources/ plus `inference_model_cards/<card_name>` (rebuilt each call)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(install.source / "resources", dest)
    (dest / "inference_model_cards" / card_name).write_text(card_text)
    for dirpath, _dirs, files in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return dest
