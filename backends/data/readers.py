"""Read a data file as a stream of raw rows: JSONL, JSON (array), CSV/TSV, Parquet, plain text.

``open_source(path)`` returns a ``Source`` whose ``rows()`` yields (number, object) pairs one by
one, so a file of several GB is read with bounded memory (JSONL line by line, CSV and Parquet in
pyarrow record batches; a JSON array is parsed whole, its size is the file's). ``Source.done`` /
``Source.total`` give the progress (bytes, or rows for Parquet).

- JSON Lines is split on ``\\n`` bytes only, never with ``str.splitlines``: a JSON string may hold
  U+2028, U+2029, U+0085, a form feed or another control character (parsed with
  ``json.JSONDecoder(strict=False)``). A UTF-8 byte-order mark and blank lines are accepted.
- A malformed JSONL line is yielded as ``BadRow(reason)`` in place of the object: the pipeline drops
  and names it (``FILE:LINE``), or, with ``data.strict``, stops on it. A NUL byte, text that is not
  UTF-8 and a line over ``MAX_LINE_BYTES`` stop the reading (``UserInputError`` naming the line).
- CSV goes through pyarrow (every column read as text, so ``"007"`` stays a string).
- ``.txt`` / ``.md`` files are plain text: one ``{"text": ...}`` row per file (a file over
  ``MAX_LINE_BYTES`` is split at blank lines into rows under it); a folder is read as its
  ``.txt`` / ``.md`` files, sorted by path (hidden files and folders skipped), one row each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from backends.errors import UserInputError

# One raw row: (row number, the decoded object). For JSONL the number is the physical line number
# (1-based, blank lines counted); for the other file types it is the 1-based row.
Row = tuple[int, Any]

_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_CSV_SUFFIXES = {".csv", ".tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
# The longest JSON Lines row read: 4 MiB is about a million tokens, 30x the longest context of
# the models TuneDesk trains, and rows over max_seq_length are cut anyway. Longer lines are
# refused at once (a 200 MB line took minutes of tokenising and GBs of memory to be cut).
MAX_LINE_BYTES = 4 * 2**20
_DECODER = json.JSONDecoder(strict=False)  # control characters inside strings are accepted


class BadRow(NamedTuple):
    """Stands in for the object of a line that is not valid JSON; ``reason`` says why."""

    reason: str


class Source:
    """A data file (or folder of text files) opened for streaming.

    ``kind``: 'jsonl', 'json', 'csv', 'parquet' or 'text'; ``unit``: 'line' (JSONL: row numbers
    are line numbers) or 'row'. ``rows()`` yields (number, object or ``BadRow``) once.
    ``done`` / ``total`` / ``measure`` ('bytes' or 'rows'): how far the reading is.
    ``file_of(number)``: the file a row came from (the text file inside a folder, else ``path``).
    """

    def __init__(self, path: Path, kind: str, total: int, measure: str = "bytes") -> None:
        self.path = path
        self.kind = kind
        self.unit = "line" if kind == "jsonl" else "row"
        self.total = total
        self.measure = measure
        self.done = 0
        self._files: dict[int, Path] = {}
        self._iter: Callable[[], Iterator[Row]] = lambda: iter(())

    def rows(self) -> Iterator[Row]:
        """The rows, in file order (raises UserInputError for a file that stops being readable)."""
        return self._iter()

    def file_of(self, number: int) -> Path:
        return self._files.get(number, self.path)


def file_kind(path: Path) -> str:
    """The reader for ``path`` by its suffix: 'jsonl', 'json', 'csv', 'parquet' or 'text' (also
    for a folder).

    ``.json`` files holding JSON Lines instead of an array are detected when read. Unknown suffixes
    are sniffed: text starting with ``[`` is JSON, with ``{`` JSON Lines. Raises UserInputError
    for anything else.
    """
    if path.is_dir():
        return "text"
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in TEXT_SUFFIXES:
        return "text"
    with open(path, "rb") as fh:
        head = _decode(path, fh.read(4096), partial=True).lstrip()
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "jsonl"
    raise UserInputError(
        "unsupported file type; use JSONL (.jsonl), JSON (.json), CSV (.csv/.tsv), Parquet "
        "(.parquet), plain text (.txt/.md) or a folder of .txt/.md files",
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


def _jsonl_rows(path: Path, source: Source) -> Iterator[Row]:
    """(line number, object or BadRow) of a JSON Lines file, read as a stream of ``\\n``-ended byte
    lines. A line longer than ``MAX_LINE_BYTES`` is refused as soon as that many bytes were read."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            offset = source.done
            source.done += len(raw)
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
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"not UTF-8 text (byte {offset + exc.start}); save the file as UTF-8",
                    file=path,
                    line=number,
                ) from None
            line = line.strip(" \t\r\n\ufeff")
            if line:
                yield number, _parse_line(line)


def _parse_line(line: str) -> Any:
    try:
        obj, end = _DECODER.raw_decode(line)
    except json.JSONDecodeError as exc:
        return BadRow(f"not valid JSON: {exc.msg} (column {exc.colno})")
    if line[end:].strip():
        return BadRow(
            f"not valid JSON: extra data after the object (column {end + 1}); JSON Lines needs one object per line"
        )
    return obj


def _json_rows(path: Path, source: Source) -> Iterator[Row]:
    text = _decode(path, path.read_bytes())
    source.done = source.total
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        return
    if not stripped.startswith("["):
        raise UserInputError("expected a JSON array of rows or JSON Lines", file=path, line=1)
    try:
        data = _DECODER.decode(stripped)
    except json.JSONDecodeError as exc:
        line = exc.lineno + text[: len(text) - len(stripped)].count("\n")
        raise UserInputError(
            f"not valid JSON: {exc.msg} (column {exc.colno})", file=path, line=line
        ) from None
    del text, stripped
    yield from enumerate(data, start=1)


class _Counting:
    """A binary file whose reads add to ``source.done`` (pyarrow reads through it)."""

    def __init__(self, path: Path, source: Source) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 (closed by the reader)
        self.source = source
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.source.done += len(data)
        return data

    def close(self) -> None:
        self.fh.close()
        self.closed = True


def _csv_rows(path: Path, source: Source) -> Iterator[Row]:
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
        stream = _Counting(path, source)
        number = 0
        try:
            with pa_csv.open_csv(stream, parse_options=parse, convert_options=convert) as reader:
                for batch in reader:
                    for row in batch.to_pylist():
                        number += 1
                        yield number, {k.lstrip("\ufeff"): v for k, v in row.items()}
        finally:
            stream.close()
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"cannot read CSV: {exc}", file=path) from None


def _parquet_rows(path: Path, source: Source) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                number += 1
                source.done = number
                yield number, row
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"cannot read Parquet: {exc}", file=path) from None


def text_files(folder: Path) -> list[Path]:
    """The ``.txt`` / ``.md`` files under ``folder``, sorted, hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in TEXT_SUFFIXES
        ]
    return sorted(found)


def _text_parts(text: str) -> list[str]:
    """The text as one part, or cut at blank lines into parts under ``MAX_LINE_BYTES`` bytes."""
    if len(text.encode("utf-8")) <= MAX_LINE_BYTES:
        return [text]
    parts, current, size = [], [], 0
    for para in text.split("\n\n"):
        n = len(para.encode("utf-8")) + 2
        if current and size + n > MAX_LINE_BYTES:
            parts.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += n
    parts.append("\n\n".join(current))
    return parts


def _text_rows(path: Path, source: Source, files: list[Path]) -> Iterator[Row]:
    number = 0
    for file in files:
        data = file.read_bytes()
        source.done += len(data)
        if b"\0" in data:
            raise UserInputError("binary data (a NUL byte), not a text file", file=file)
        for part in _text_parts(_decode(file, data)):
            if part.strip():
                number += 1
                source._files[number] = file
                yield number, {"text": part}


def open_source(path: str | Path) -> Source:
    """Open a data file (or a folder of .txt/.md files) for streaming its rows.

    Raises UserInputError when it is missing, of an unknown type, or (a folder) holds no text file.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError("data file not found", file=path)
    if not (path.is_file() or path.is_dir()):
        raise UserInputError("not a file", file=path)
    kind = file_kind(path)
    if kind == "text":
        files = text_files(path) if path.is_dir() else [path]
        if not files:
            raise UserInputError("the folder holds no .txt or .md file", file=path)
        source = Source(path, kind, sum(f.stat().st_size for f in files))
        source._iter = lambda: _text_rows(path, source, files)
        return source
    size = path.stat().st_size
    if kind == "json":
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8-sig", errors="replace").lstrip()
        if head.startswith("{"):
            kind = "jsonl"  # many ".json" files are JSON Lines: one object per line
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            size = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a damaged file
            raise UserInputError(f"cannot read Parquet: {exc}", file=path) from None
        source = Source(path, kind, size, measure="rows")
    else:
        source = Source(path, kind, size)
    reader = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind]
    source._iter = lambda: reader(path, source)
    return source


def read_file(path: str | Path) -> tuple[str, list[Row]]:
    """Read every row of a data file into memory (``open_source`` streams them).

    Returns (kind, rows): rows are (number, object or ``BadRow``) pairs in file order.
    Raises UserInputError as ``open_source`` and its reading do.
    """
    source = open_source(path)
    return source.kind, list(source.rows())
