"""Packaging (metadata is in pyproject.toml): which packages the wheel holds.

The suite ships inside the wheel as `modeldrop.suite`, mapped from the checkout's top level, so the top-level
gates/, fixtures/, benchmarks/, conftest.py and pyproject.toml's pytest settings stay its one source: an installed
`model-drop` (or `pytest "$(model-drop --suite-dir)/gates"`) runs them as `pytest gates/` runs them in a checkout.
An editable install maps nothing: it runs the checkout itself (modeldrop.statedirs.suite_root).
"""

import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

SUITE = ("gates", "fixtures", "benchmarks")
EDITABLE = "editable_wheel" in sys.argv


class BuildPy(build_py):
    """build_py without this file: the top level is `modeldrop.suite`, and only conftest.py belongs to it."""

    def find_package_modules(self, package, package_dir):
        found = super().find_package_modules(package, package_dir)
        return [m for m in found if package != "modeldrop.suite" or m[1] == "conftest"]


setup(
    packages=[*find_packages(include=["modeldrop", "modeldrop.*", "sandbox", "sandbox.*"]),
              *([] if EDITABLE else ["modeldrop.suite", *(f"modeldrop.suite.{d}" for d in SUITE)])],
    package_dir={} if EDITABLE else {"modeldrop.suite": "."},
    cmdclass={"build_py": BuildPy},
)
