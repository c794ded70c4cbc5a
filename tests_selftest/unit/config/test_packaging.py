"""Packaging: constraints.txt pins a version of every dependency that satisfies pyproject.toml (so a dependency
changed without refreshing it fails here), the private APIs are pinned below their next major, the operator's
dependencies carry no self-test tool, and the wheel maps every top-level suite package the conftest registers."""

from __future__ import annotations

import ast
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modeldrop.plugin.html_adapter import SUPPORTED_MAJOR
from tests_selftest.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def pins() -> dict[str, list[str]]:
    """{canonical name: [pinned versions]} of constraints.txt (one per marker branch)."""
    out: dict[str, list[str]] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;#]+)", line)
        if m:
            out.setdefault(canonicalize_name(m.group(1)), []).append(m.group(2))
    return out


def requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "modeldrop"]


def test_constraints_pin_every_dependency_within_its_range():
    pinned = pins()
    for req in requirements():
        versions = pinned.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in constraints.txt: refresh it (see its header)"
        for v in versions:
            assert req.specifier.contains(v, prereleases=True), f"constraints.txt pins {req.name}=={v}, outside {req}"


def test_private_apis_are_pinned_below_their_next_major():
    deps = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PROJECT["dependencies"]}
    html = deps["pytest-html"].specifier
    assert html.contains(f"{SUPPORTED_MAJOR}.9") and not html.contains(f"{SUPPORTED_MAJOR + 1}.0")
    dotenv = deps["python-dotenv"].specifier  # modeldrop/envfile.py uses dotenv.parser and dotenv.variables
    assert dotenv.contains("1.9") and not dotenv.contains("2.0")


def test_extras_are_by_who_needs_them():
    main = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    extras = {k: {canonicalize_name(Requirement(r).name) for r in v}
              for k, v in PROJECT["optional-dependencies"].items()}
    assert "pytest-xdist" not in main and "pytest-xdist" in extras["dev"]
    assert {"tokenizers", "transformers"} <= extras["bench"] and not {"tokenizers", "transformers"} & main
    assert "mlx-lm" in extras["sandbox"] and "modeldrop" in extras["sandbox"]  # modeldrop[bench] with it
    assert "platformdirs" in main


def test_the_wheel_maps_every_suite_package_the_conftest_registers():
    tree = ast.parse((REPO / "conftest.py").read_text())
    plugins = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in n.targets))
    top = {p.split(".")[0] for p in plugins} - {"modeldrop", "sandbox"}
    setup = (REPO / "setup.py").read_text()
    suite = ast.literal_eval(re.search(r"^SUITE = (\(.*\))$", setup, re.M).group(1))
    assert top <= set(suite) and {"gates", "benchmarks"} <= set(suite)
    assert all((REPO / d / "__init__.py").is_file() for d in suite)
    assert '"modeldrop.suite" = ["pyproject.toml"]' in (REPO / "pyproject.toml").read_text()  # pytest's settings
