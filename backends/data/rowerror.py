"""``RowError``: one row of a data file is invalid (shared by the format and tool-call parsers)."""

from __future__ import annotations

from typing import Any


class RowError(Exception):
    """One row is invalid: ``field`` (a path such as ``messages[2].content``) and ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def type_name(value: Any) -> str:
    """The JSON name of a value's type: object, list, string, boolean, number, null."""
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
