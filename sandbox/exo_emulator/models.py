"""Where a model lives on this node and whether it is complete.

Contract: ``find_model(model_id, dirs)`` returns the first ``<dir>/<org>--<name>`` that holds at
least one ``*.safetensors.index.json`` (searched recursively) and every weight file named in its
``weight_map``; read-only dirs are searched first. Sizes and contents are not checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .paths import ModelDir


def normalize(model_id: str) -> str:
    return model_id.replace("/", "--")


def is_complete(model_dir: Path) -> bool:
    if not model_dir.is_dir():
        return False
    indexes = list(model_dir.rglob("*.safetensors.index.json"))
    if not indexes:
        return False
    for index in indexes:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, ValueError):
            return False
        for fname in set(weight_map.values()):
            if not (index.parent / fname).exists():
                return False
    return True


@dataclass(frozen=True)
class FoundModel:
    path: Path
    read_only: bool


def find_model(model_id: str, dirs: list[ModelDir]) -> FoundModel | None:
    for d in dirs:
        candidate = d.path / normalize(model_id)
        if is_complete(candidate):
            return FoundModel(candidate, d.read_only)
    return None
