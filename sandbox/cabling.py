"""How the sandbox's nodes are cabled: a full mesh (every Mac on one LAN) or a ring (four Macs on Thunderbolt
with no shared LAN: each reaches only its two neighbours), with cables taken out on demand.

Contract: `Cabling(n, topology, cut)`; `linked(a, b)` says whether nodes a and b reach each other;
`unreachable(k)` lists the nodes k cannot reach. A ring of 2 or 3 nodes links every pair (it is a mesh);
`cut` removes links (pairs of node numbers, either order). Node EXOs are told their unreachable addresses
through emulator.json's `unreachable` (real EXO's node shim and the emulator both honour it); the control
host (the suite) reaches every node, as an operator's laptop on the Macs' management network would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sandbox.layout import SandboxError

TOPOLOGIES = ("mesh", "ring")


class CablingError(SandboxError):
    """A topology or cable the sandbox cannot make; the message names it and what is valid."""


@dataclass(frozen=True)
class Cabling:
    n: int
    topology: str = "mesh"
    cut: frozenset[frozenset[int]] = frozenset()

    @classmethod
    def make(cls, n: int, topology: str = "mesh", cut: Iterable[tuple[int, int]] = ()) -> Cabling:
        """A validated cabling (CablingError naming the bad topology or cable)."""
        if topology not in TOPOLOGIES:
            raise CablingError(f"sandbox topology {topology!r}: use one of {', '.join(TOPOLOGIES)}")
        pairs = set()
        for a, b in cut:
            if a == b or not (1 <= a <= n and 1 <= b <= n):
                raise CablingError(f"cable {a}-{b}: a cable joins two different nodes of 1..{n}")
            pairs.add(frozenset((a, b)))
        return cls(n, topology, frozenset(pairs))

    def linked(self, a: int, b: int) -> bool:
        """Do nodes a and b reach each other (a cable, or the same LAN)?"""
        if a == b:
            return True
        if frozenset((a, b)) in self.cut:
            return False
        return self.topology == "mesh" or (a - b) % self.n in (1, self.n - 1)

    def unreachable(self, k: int) -> list[int]:
        """The nodes k cannot reach."""
        return [j for j in range(1, self.n + 1) if not self.linked(k, j)]

    def describe(self) -> str:
        cut = ", ".join(f"{min(p)}-{max(p)}" for p in sorted(self.cut, key=sorted))
        return f"{self.topology}" + (f" without cable {cut}" if cut else "")
