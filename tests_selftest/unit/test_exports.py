"""Every library module that declares `__all__` exports exactly names it defines: `from m import *` works."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _declaring_all() -> list[str]:
    """modeldrop modules (packages by their `__init__`) whose source assigns `__all__`, found without importing."""
    out = []
    for path in sorted((ROOT / "modeldrop").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
               for n in tree.body):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = _declaring_all()


def test_the_library_declares_its_exports():
    assert {"modeldrop.plugin", "modeldrop.ledger"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_star_import_gives_every_name_in_all(name):
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # noqa: S102 - the star import itself is what is tested
    assert set(module.__all__) <= set(namespace)
