"""Identifiers: node ids per generation, uuids, ring ports."""

from __future__ import annotations

import os
import random
import uuid

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_node_id(generation: str) -> str:
    """NEW: random 32-hex zenoh id (leading zeros stripped); OLD: ``12D3KooW`` + 44 base58."""
    if generation == "new":
        return os.urandom(16).hex().lstrip("0") or "1"
    return "12D3KooW" + "".join(random.choice(_B58) for _ in range(44))


def new_uuid() -> str:
    return str(uuid.uuid4())


def random_ephemeral_port() -> int:
    """exo's ``random_ephemeral_port``: 49153..65535, minus 1 when <= 52415."""
    port = random.randint(49153, 65535)
    return port - 1 if port <= 52415 else port
