#!/usr/bin/env python3
"""Print the shape of the import graph of `modeldrop/` and `sandbox/` (stdlib `ast` only).

Layers, lowest first: library (`modeldrop`), sandbox (`sandbox`), tests (`fixtures`, `gates`,
`benchmarks`, `tests_selftest`). An import "runs back up" when a module imports a higher layer, or
loads a higher layer's file by path. Cycles are counted between modules and between packages
(`modeldrop.exo` <-> `modeldrop.signatures`). Prints: modules, back-up imports, import cycles,
the largest file in `modeldrop/`, lines of plugin code, `sys.path` edits.

Usage: python3 scripts/import_graph.py [REPO_ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = {"modeldrop": 0, "sandbox": 1, "fixtures": 2, "gates": 2, "benchmarks": 2, "tests_selftest": 2}
SCANNED = ("modeldrop", "sandbox")


def module_name(root: Path, path: Path) -> str:
    """`modeldrop/exo/state.py` -> `modeldrop.exo.state`; a package's `__init__` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(tree: ast.AST, name: str, is_pkg: bool) -> set[str]:
    """Absolute module names a module imports (relative imports resolved)."""
    out: set[str] = set()
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            pkg = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join([*pkg, node.module] if node.module else pkg)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


LOADERS = {"spec_from_file_location", "run_path", "exec_module", "SourceFileLoader"}


def path_loads(tree: ast.AST) -> set[str]:
    """Top-level packages joined into a path (`root / "tests_selftest" / ...`) in a module that loads
    code by path (importlib's spec_from_file_location, runpy.run_path): files imported by path."""
    names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
             if isinstance(n, (ast.Attribute, ast.Name))}
    if not names & LOADERS:
        return set()
    return {node.right.value for node in ast.walk(tree)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
            and node.right.value in LAYERS}


def resolve(target: str, modules: set[str]) -> str | None:
    """The longest known module that `target` names (a `from pkg import name` may name an attribute)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def package_of(module: str) -> str:
    """`modeldrop.exo.state` -> `modeldrop.exo`; a top-level module of a layer stays itself."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for this size)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(root: Path) -> None:
    files = {p: module_name(root, p) for top in SCANNED for p in sorted((root / top).rglob("*.py"))
             if ".venv" not in p.parts}
    modules = set(files.values())
    graph: dict[str, set[str]] = {}
    upward: list[str] = []
    sys_path_edits: list[str] = []
    for path, name in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = imports_of(tree, name, path.name == "__init__.py")
        own = LAYERS[name.split(".")[0]]
        for t in sorted(targets):
            top = t.split(".")[0]
            if top in LAYERS and LAYERS[top] > own:
                upward.append(f"{name} imports {t}")
        upward += [f"{name} names {top}/ (a file loaded by path)" for top in sorted(path_loads(tree))
                   if LAYERS[top] > own]
        graph[name] = {r for t in targets if (r := resolve(t, modules)) and r != name}
        sys_path_edits += [f"{name}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                           and n.attr in ("insert", "append") and isinstance(n.value, ast.Attribute)
                           and n.value.attr == "path" and getattr(n.value.value, "id", "") == "sys"]
    # a package imports its own submodules on purpose; only cycles between sibling modules count
    pkg_free = {m: {t for t in ts if not t.startswith(m + ".") and not m.startswith(t + ".")}
                for m, ts in graph.items()}
    cyc = cycles(pkg_free)
    pkg_graph: dict[str, set[str]] = {}
    for m, ts in pkg_free.items():
        pkg_graph.setdefault(package_of(m), set()).update(package_of(t) for t in ts if package_of(t) != package_of(m))
    cyc += [c for c in cycles(pkg_graph) if c not in cyc]
    lib = {p: len(p.read_text(encoding="utf-8").splitlines()) for p, n in files.items() if n.startswith("modeldrop")}
    largest = max(lib, key=lib.__getitem__)
    plugin = [p for p in lib if "plugin" in p.relative_to(root).parts[1].split(".")[0]]
    print(f"modules: {len(modules)}")
    print(f"imports back up a layer: {len(upward)}")
    for u in upward:
        print(f"  {u}")
    print(f"import cycles: {len(cyc)}")
    for c in cyc:
        print(f"  {' <-> '.join(c)}")
    print(f"largest file in modeldrop/: {largest.relative_to(root)} ({lib[largest]} lines)")
    print(f"plugin code: {sum(lib[p] for p in plugin)} lines in {len(plugin)} file(s), "
          f"largest {max((lib[p] for p in plugin), default=0)}")
    print(f"sys.path edits: {len(sys_path_edits)}" + (f" ({', '.join(sys_path_edits)})" if sys_path_edits else ""))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]).resolve())
