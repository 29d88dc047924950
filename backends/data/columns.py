"""Column mapping: the user's columns renamed to the fields of a format, and a preview of the rows.

A mapping is ``{role: source column}``, e.g. ``{"prompt": "question", "completion": "answer"}``
(``--columns prompt=question,completion=answer`` on the command line, ``data.columns`` in a run
config). Roles are the fields the formats read (``ROLES``). Applied to a row, each role takes the
value of its source column (the source column itself is then gone); other columns stay as they
are. Without a mapping, a file whose rows match no format gets one detected from common column
names (``question``/``answer``, ``query``/``response`` ...: ``ALIASES``); the mapping applied (given
or detected) is reported by ``data check`` as ``columns``, with the identity mapping of the
format's own fields when nothing was renamed.
"""

from __future__ import annotations

import json
from typing import Any

from backends.errors import UserInputError

ROLES = (
    "messages",
    "conversations",
    "tools",
    "system",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "label",
    "kto_tag",
    "instruction",
    "input",
    "output",
    "history",
    "text",
)

# Common column names of datasets that follow no format, in order of preference per role.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("question", "query", "Question", "Query", "human", "user"),
    "completion": ("answer", "response", "Answer", "Response", "assistant", "bot"),
    "system": ("system_prompt",),
}

# The fields each format reads (for the identity mapping ``data check`` reports).
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "tools"),
    "sharegpt": ("conversations", "tools", "system"),
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("prompt", "conversations", "chosen", "rejected"),
    "feedback": ("prompt", "completion", "messages", "conversations", "label", "kto_tag"),
}

PREVIEW_ROWS = 10
PREVIEW_CHARS = 200


def parse_columns(value: str | dict[str, str] | None, field: str = "--columns") -> dict[str, str]:
    """``"prompt=question,completion=answer"`` (or an already parsed dict) as ``{role: column}``.

    Raises UserInputError (naming ``field``) for an item without ``=``, an unknown role, an empty
    column name or a role given twice."""
    if not value:
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if "=" not in item:
                raise UserInputError(
                    f"expected ROLE=COLUMN items separated by commas, got {item!r}", field=field
                )
            role, column = item.split("=", 1)
            items.append((role.strip(), column.strip()))
    mapping: dict[str, str] = {}
    for role, column in items:
        if role not in ROLES:
            raise UserInputError(f"unknown role {role!r}; roles: {', '.join(ROLES)}", field=field)
        if not isinstance(column, str) or not column:
            raise UserInputError(f"role {role!r} needs a column name", field=field)
        if role in mapping:
            raise UserInputError(f"role {role!r} is given twice", field=field)
        mapping[role] = column
    return mapping


def detect_aliases(obj: Any) -> dict[str, str]:
    """A mapping for a row whose columns match no format but have common names (question/answer),
    or {} when it would not give both a prompt and a completion."""
    if not isinstance(obj, dict):
        return {}
    mapping = {}
    for role, names in ALIASES.items():
        if role in obj:
            continue
        column = next((n for n in names if n in obj), None)
        if column is not None:
            mapping[role] = column
    prompt = "prompt" in mapping or "prompt" in obj
    completion = "completion" in mapping or "completion" in obj
    return mapping if prompt and completion else {}


def apply_columns(obj: Any, mapping: dict[str, str]) -> Any:
    """The row with each role set from its source column (that column removed); a source column the
    row lacks leaves the role missing (the row's validation then names it)."""
    if not mapping or not isinstance(obj, dict):
        return obj
    out = {k: v for k, v in obj.items() if k not in mapping.values() and k not in mapping}
    for role, column in mapping.items():
        if column in obj:
            out[role] = obj[column]
    return out


def source_field(field: str, mapping: dict[str, str]) -> str:
    """A row problem's field path in the user's column names: ``prompt`` -> ``question``,
    ``messages[2].role`` -> ``conv[2].role`` (unchanged when its role is not mapped)."""
    cut = min([i for i in (field.find("["), field.find(".")) if i >= 0] or [len(field)])
    head = field[:cut]
    return mapping[head] + field[cut:] if head in mapping else field


def missing_columns(mapping: dict[str, str], columns: list[str]) -> list[str]:
    """The source columns of ``mapping`` that are not among ``columns``."""
    return [c for c in mapping.values() if c not in columns]


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def preview(objects: list[Any]) -> dict[str, Any]:
    """``{"columns": [source column names], "rows": [[cell strings] ...]}`` of the first rows (as
    read, before any mapping): columns in order of first appearance, each cell its string (other
    values as JSON), cut to ``PREVIEW_CHARS`` characters, "" where a row lacks the column."""
    columns: list[str] = []
    for obj in objects[:PREVIEW_ROWS]:
        if isinstance(obj, dict):
            columns += [k for k in obj if k not in columns]
    rows = []
    for obj in objects[:PREVIEW_ROWS]:
        if isinstance(obj, dict):
            rows.append([_cell(obj[c]) if c in obj else "" for c in columns])
        else:
            rows.append([_cell(obj)] + [""] * (len(columns) - 1) if columns else [_cell(obj)])
    return {"columns": columns, "rows": rows}


def report_mapping(fmt: str, mapping: dict[str, str], columns: list[str]) -> dict[str, str]:
    """The mapping ``data check`` reports: the applied one, plus the format's own fields present
    under their own names (``{"prompt": "prompt"}``)."""
    out = dict(mapping)
    for role in FORMAT_FIELDS.get(fmt, ()):
        if role not in out and role in columns:
            out[role] = role
    return out
