"""Rows of one data file as a stream, renamed by the column mapping, with the format detected.

``open_rows`` reads just far enough to know the format (the first row whose fields match one) and
the preview (the first rows as read), then ``RowStream.rows()`` yields every row in order,
checking each against the detected format: a row of another format stops the reading with an
error naming it (one format per file). ``read_rows`` collects the stream into a list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.data.columns import (
    PREVIEW_ROWS,
    apply_columns,
    detect_aliases,
    missing_columns,
    parse_columns,
    preview,
)
from backends.data.formats import FORMATS, detect_row_format
from backends.data.readers import BadRow, Row, Source, open_source
from backends.errors import UserInputError

# Rows read ahead to find the first one whose fields match a format.
LOOKAHEAD_ROWS = 10_000

FORMAT_FIELDS_HINT = (
    "messages (`messages`), sharegpt (`conversations`), alpaca (`instruction`/`output`), "
    "prompt_completion (`prompt`/`completion`), text (`text`), preference (`prompt` or "
    "`conversations` with `chosen`/`rejected`), feedback (`prompt`/`completion` or `messages` with "
    "`label` true/false); or map your columns: --columns prompt=COL,completion=COL (data.columns)"
)


class RowList(list):
    """Rows of one file as (number, object) pairs; ``unit`` is 'line' (JSONL: numbers are line
    numbers) or 'row' (1-based rows of a JSON array, CSV or Parquet file)."""

    unit: str = "row"


def where(unit: str, row: int) -> str:
    return f"line {row}" if unit == "line" else f"row {row}"


def row_error(
    file: str | Path, unit: str, row: int, field: str, reason: str, hint: str | None = None
) -> UserInputError:
    """A UserInputError for one row: ``FILE:LINE: FIELD: REASON`` for JSONL, ``FILE: row N: FIELD:
    REASON`` otherwise. The error carries ``.file``, ``.line`` (JSONL), ``.row`` and ``.field``."""
    err = UserInputError(reason, file=file, line=row if unit == "line" else None, field=field, hint=hint)
    err.row = row  # type: ignore[attr-defined]
    if unit != "line":
        err.args = (f"{file}: row {row}: {field}: {reason}" + (f" ({hint})" if hint else ""),)
    return err


_CSV_TRUE, _CSV_FALSE = ("true", "yes", "1"), ("false", "no", "0")


def csv_booleans(obj: Any) -> Any:
    """A CSV row (all text) with its ``label`` / ``kto_tag`` cell as a boolean where it spells one
    (true/false, yes/no, 1/0): CSV has no booleans, JSON does."""
    for key in ("label", "kto_tag"):
        value = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(value, str) and value.strip().lower() in _CSV_TRUE + _CSV_FALSE:
            obj = {**obj, key: value.strip().lower() in _CSV_TRUE}
    return obj


class RowStream:
    """One file's rows: ``format``, ``unit`` ('line' | 'row'), ``columns`` (the mapping applied,
    ``{role: source column}``), ``preview`` (see ``backends.data.columns.preview``), ``source``
    (progress: ``source.done`` / ``source.total``) and ``rows()`` (once)."""

    def __init__(
        self, source: Source, fmt: str, columns: dict[str, str], head: list[Row], rest: Iterator[Row]
    ) -> None:
        self.source = source
        self.path = source.path
        self.unit = source.unit
        self.format = fmt
        self.columns = columns
        self.preview = preview([obj for _, obj in head if not isinstance(obj, BadRow)])
        self._head = head
        self._rest = rest

    def rows(self) -> Iterator[Row]:
        """(number, object renamed by ``columns``, or ``BadRow``) in file order. Raises
        UserInputError for a row of another format than the detected one (auto)."""
        first: int | None = None
        for number, obj in self._all():
            if isinstance(obj, BadRow):
                yield number, obj
                continue
            obj = apply_columns(obj, self.columns)
            if self.source.kind == "csv":
                obj = csv_booleans(obj)
            if self._auto:
                fmt = detect_row_format(obj)
                if (
                    self.format == "feedback"
                    and isinstance(obj, dict)
                    and ("label" in obj or "kto_tag" in obj)
                ):
                    fmt = "feedback"  # a label that is no boolean: that row's validation names it
                if fmt is not None and first is None and fmt == self.format:
                    first = number
                elif fmt is not None and fmt != self.format:
                    raise row_error(
                        self.source.file_of(number),
                        self.unit,
                        number,
                        ",".join(sorted(obj)),
                        f"mixed formats: this row is {fmt!r} but {where(self.unit, first or 1)} is "
                        f"{self.format!r}; use one format per file",
                    )
            yield number, obj

    def _all(self) -> Iterator[Row]:
        yield from self._head
        self._head = []
        yield from self._rest

    _auto = True


def open_rows(path: str | Path, format: str = "auto", columns: Any = None) -> RowStream:
    """Open a data file and detect its format (and, without a mapping, common column names).

    ``format``: 'auto' or one of ``FORMATS`` (taken as given). ``columns``: a mapping ``{role:
    source column}`` or its ``role=column,...`` text. Raises UserInputError when the file cannot
    be read, has no rows, a mapped column is in none of the first rows, or (auto) no row in the
    first ``LOOKAHEAD_ROWS`` matches a known format.
    """
    if format != "auto" and format not in FORMATS:
        raise UserInputError(
            f"unknown format {format!r}; use auto or one of {', '.join(FORMATS)}", field="data.format"
        )
    mapping = parse_columns(columns, "data.columns")
    source = open_source(path)
    it = source.rows()
    head: list[Row] = []
    fmt = None if format == "auto" else format
    good: list[Any] = []
    aliases: dict[str, str] | None = None
    found = fmt
    for number, obj in it:
        head.append((number, obj))
        if not isinstance(obj, BadRow):
            good.append(obj)
            if aliases is None and not mapping:
                aliases = detect_aliases(obj) if detect_row_format(obj) is None else {}
            if found is None:
                mapped = apply_columns(obj, mapping or aliases or {})
                found = detect_row_format(csv_booleans(mapped) if source.kind == "csv" else mapped)
        if (len(good) >= PREVIEW_ROWS and found is not None) or len(head) >= LOOKAHEAD_ROWS:
            break
    if not head:
        raise UserInputError("the file has no rows", file=source.path)
    if mapping:
        names = preview(good)["columns"]
        missing = missing_columns(mapping, names)
        if good and missing:
            raise UserInputError(
                f"column(s) {', '.join(map(repr, missing))} not in the file; its columns: "
                + (", ".join(names) or "(none)"),
                file=source.path,
                field="data.columns",
            )
    else:
        mapping = aliases or {}
    fmt = found
    if fmt is None:
        _single_object(source, head)
        number, obj = next(((n, o) for n, o in head if not isinstance(o, BadRow)), head[0])
        fields = ", ".join(sorted(obj)) if isinstance(obj, dict) else type(obj).__name__
        raise row_error(
            source.file_of(number),
            source.unit,
            number,
            "(row)",
            "cannot tell the format: no row has the fields of a known format; this one has: " + fields
            if not isinstance(obj, BadRow)
            else f"cannot tell the format: no readable row ({obj.reason})",
            hint=f"known formats: {FORMAT_FIELDS_HINT}",
        )
    stream = RowStream(source, fmt, mapping, head, it)
    stream._auto = format == "auto"
    return stream


def _single_object(source: Source, head: list[Row]) -> None:
    """Name the mistake of a ``.json`` file holding one (pretty-printed) object, not rows."""
    if source.path.suffix.lower() != ".json" or not all(isinstance(o, BadRow) for _, o in head):
        return
    if source.path.stat().st_size > 64 * 2**20:
        return
    try:
        obj = json.loads(source.path.read_bytes().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(obj, dict):
        raise UserInputError(
            "expected a JSON array of rows (or one JSON object per line), got a single object",
            file=source.path,
            line=1,
        )


def read_rows(path: str | Path, format: str = "auto", columns: Any = None) -> tuple[str, RowList]:
    """Read a data file and detect its format (``open_rows``), every row into memory.

    Returns (format, rows): rows are (number, object or ``BadRow``) pairs (see ``RowList``).
    Raises UserInputError as ``open_rows`` and ``RowStream.rows`` do.
    """
    stream = open_rows(path, format, columns)
    rows = RowList(stream.rows())
    rows.unit = stream.unit
    return stream.format, rows
