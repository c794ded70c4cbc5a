"""EXO emulator: a stdlib + mlx-lm stand-in for exo-explore/exo (both wire generations).

Imported in this repository as ``sandbox.exo_emulator``. Its modules import each other relatively and
nothing outside it, so a copy runs under any package name: each sandbox node runs its copy
(``<root>/lib/exo_emulator``) as ``python -m exo_emulator [exo flags]`` with ``EXO_EMULATOR_CONFIG``
naming the node's emulator.json. Fidelity target: EXO's own API bodies (tests_selftest/data/exo-golden/).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
