"""The API's error shapes: exo's ``{"error": {...}}`` bodies and FastAPI's 422 validation details.

Contract: raising ``HttpError(code, message)`` answers ``exo_error(code, message)``; raising
``Unprocessable(detail)`` answers 422 ``{"detail": detail}``; ``enum_error`` is one such detail for a
query value outside its enum.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class HttpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Unprocessable(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("422")
        self.detail = detail


def exo_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": HTTPStatus(code).phrase, "param": None, "code": code}}


def enum_error(loc: str, value: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    exp = " or ".join(f"'{v}'" for v in allowed)
    return {"type": "enum", "loc": ["query", loc], "msg": f"Input should be {exp}", "input": value,
            "ctx": {"expected": exp}}
