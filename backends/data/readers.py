"""Read a data file into raw rows: JSONL, JSON (array), CSV/TSV and Parquet.

JSON and JSONL are parsed with the standard library line by line, so a malformed line is reported
with its line number; CSV and Parquet go through pyarrow (no hand-written CSV parser; every CSV
column is read as text so ``"007"`` stays a string). A UTF-8 byte-order mark and blank lines are
accepted. Anything unreadable raises ``UserInputError`` naming the file (and line where one exists).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backends.errors import UserInputError

# One raw row: (row number, the decoded object). For JSONL the number is the physical line number
# (1-based, blank lines counted); for the other file types it is the 1-based row.
Row = tuple[int, Any]

_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_CSV_SUFFIXES = {".csv", ".tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
# The longest JSON Lines row read: 4 MiB is about a million tokens, 30x the longest context of
# the models TuneDesk trains, and rows over max_seq_length are cut anyway. Longer lines are
# refused at once (a 200 MB line took minutes of tokenising and GBs of memory to be cut).
MAX_LINE_BYTES = 4 * 2**20


def file_kind(path: Path) -> str:
    """The reader for ``path`` by its suffix: 'jsonl', 'json', 'csv' or 'parquet'.

    ``.json`` files holding JSON Lines instead of an array are detected when read. Unknown suffixes
    are sniffed: text starting with ``[`` is JSON, with ``{`` JSON Lines. Raises UserInputError
    for anything else.
    """
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    head = _decode(path, path.read_bytes()[:4096], partial=True).lstrip()
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "jsonl"
    raise UserInputError(
        "unsupported file type; use JSONL (.jsonl), JSON (.json), CSV (.csv/.tsv) or Parquet (.parquet)",
        file=path,
    )


def _decode(path: Path, data: bytes, partial: bool = False) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(data) - 4:
            return data[: exc.start].decode("utf-8-sig")
        line = data[: exc.start].count(b"\n") + 1
        raise UserInputError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", file=path, line=line
        ) from None


def _jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a JSON Lines file, read as a stream: a line longer than
    ``MAX_LINE_BYTES`` is refused as soon as that many bytes were read (UserInputError), so a
    huge one-line file costs milliseconds and little memory instead of minutes of tokenising."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise UserInputError(
                    f"line longer than {MAX_LINE_BYTES // 2**20} MiB (rows this long are refused; "
                    "split the text into several rows)",
                    file=path,
                    line=number,
                )
            nul = raw.find(b"\0")
            if nul >= 0:
                raise UserInputError(
                    f"binary data (a NUL byte at byte {offset + nul}), not a text file",
                    file=path,
                    line=number,
                )
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"not UTF-8 text (byte {offset + exc.start}); save the file as UTF-8",
                    file=path,
                    line=number,
                ) from None
            offset += len(raw)
            yield number, text


def _read_jsonl(path: Path, lines: Iterable[tuple[int, str]]) -> list[Row]:
    rows: list[Row] = []
    decoder = json.JSONDecoder()
    for number, line in lines:
        line = line.lstrip("\ufeff").strip()
        if not line:
            continue
        try:
            obj, end = decoder.raw_decode(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(
                f"not valid JSON: {exc.msg} (column {exc.colno})", file=path, line=number
            ) from None
        if line[end:].strip():
            raise UserInputError(
                f"not valid JSON: extra data after the object (column {end + 1}); JSON Lines needs one object per line",
                file=path,
                line=number,
            )
        rows.append((number, obj))
    return rows


def _read_json(path: Path, text: str) -> tuple[str, list[Row]]:
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        return "json", []
    if stripped.startswith("{"):
        # Many ".json" files are JSON Lines: one object per line.
        try:
            return "jsonl", _read_jsonl(path, enumerate(text.splitlines(), start=1))
        except UserInputError as jsonl_error:
            try:
                json.loads(stripped)
            except json.JSONDecodeError:
                raise jsonl_error from None  # the JSONL error, naming the line
            raise UserInputError(
                "expected a JSON array of rows (or one JSON object per line), got a single object",
                file=path,
                line=1,
            ) from None
    if not stripped.startswith("["):
        raise UserInputError("expected a JSON array of rows or JSON Lines", file=path, line=1)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        line = exc.lineno + text[: len(text) - len(stripped)].count("\n")
        raise UserInputError(
            f"not valid JSON: {exc.msg} (column {exc.colno})", file=path, line=line
        ) from None
    return "json", [(i, obj) for i, obj in enumerate(data, start=1)]


def _read_csv(path: Path) -> list[Row]:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    parse = pa_csv.ParseOptions(
        delimiter="\t" if path.suffix.lower() == ".tsv" else ",", newlines_in_values=True
    )
    try:
        with pa_csv.open_csv(path, parse_options=parse) as reader:
            names = reader.schema.names
        convert = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False
        )
        table = pa_csv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"cannot read CSV: {exc}", file=path) from None
    rows = table.to_pylist()
    return [(i, {k.lstrip("\ufeff"): v for k, v in row.items()}) for i, row in enumerate(rows, start=1)]


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"cannot read Parquet: {exc}", file=path) from None
    return list(enumerate(table.to_pylist(), start=1))


def read_file(path: str | Path) -> tuple[str, list[Row]]:
    """Read every row of a data file.

    Returns (kind, rows): kind is 'jsonl', 'json', 'csv' or 'parquet' (rows of a JSONL file are
    numbered by line, the others by 1-based row); rows are (number, object) pairs in file order.
    Raises UserInputError when the file is missing, not UTF-8, or malformed (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError("data file not found" if not path.exists() else "not a file", file=path)
    kind = file_kind(path)
    if kind == "csv":
        return kind, _read_csv(path)
    if kind == "parquet":
        return kind, _read_parquet(path)
    if kind == "jsonl":
        return kind, _read_jsonl(path, _jsonl_lines(path))
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    if head.startswith("{") and path.stat().st_size > MAX_LINE_BYTES:
        return "jsonl", _read_jsonl(path, _jsonl_lines(path))  # too big to be one object: stream it
    return _read_json(path, _decode(path, path.read_bytes()))
