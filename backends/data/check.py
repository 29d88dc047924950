"""``tunedesk data check FILE [--model M] [--json]``: what training would make of a data file.

``check_file`` returns one JSON-ready dict (``--json`` prints it; the desktop app's data page
reads it from a subprocess). Its keys:

- ``ok`` (bool): at least one usable row.
- ``file`` (str), ``format`` (the detected or given format), ``method`` ('sft', 'dpo' or 'kto',
  from the format, or the given one), ``suits`` (the methods this format can be trained with:
  ['sft', 'grpo'] for conversations (GRPO: the last assistant turn is the reference answer),
  ['sft'] for plain text, ['dpo', 'orpo'] for preference pairs, ['kto'] for unpaired feedback), ``model`` (the model folder, or null), ``chat_template`` ('model', 'chatml', or null
  when no template is used), ``max_seq_length`` (int), ``train_on``.
- ``rows_read``, ``rows_kept``, ``rows_dropped`` (ints; kept = usable for training).
- ``problems``: every dropped row, in file order, as ``{row, field, reason, where}``: ``row`` is
  the line number when ``where`` is 'line' (JSONL), else the 1-based row; ``field`` is a path such
  as ``messages[2].role``, ``(row)`` for the whole row, or ``(length)`` for a row whose trained
  tokens were all cut by ``max_seq_length``. ``problem_count``: their number.
- ``notices``: list of strings (rows cut, validation, template remarks).
- ``literal_special_tokens``: rows whose message text spells one of the tokenizer's special
  tokens (a literal ``<|im_end|>``), as ``{row, tokens}``; training tokenises those strings as
  plain text unless ``data.literal_special_tokens: control``. Empty without a model.
- ``token_lengths``: ``{min, median, p95, max, over_max}`` over the rows that passed validation,
  before truncation (for DPO: prompt plus the longer answer); ``over_max`` counts rows longer
  than ``max_seq_length``. Null without a model or when no row could be tokenised.
- ``histogram``: ``{bins, counts}``: 20 equal-width bins from the shortest to the longest row;
  ``bins`` are the 21 edges (floats), ``counts`` the rows per bin (the last bin includes its
  upper edge). Null when ``token_lengths`` is.
- ``columns``: the column mapping applied, ``{role: source column}`` (given with ``--columns``,
  or detected from common names such as ``question``/``answer``), with the format's own fields
  present under their own names (``{"prompt": "prompt"}``).
- ``preview``: the first rows as read (before any mapping): ``{"columns": [source column names],
  "rows": [[cell strings, each cut to 200 characters], ...]}``, at most 10 rows.
- ``example``: the first usable row rendered as the model sees it: ``{row, text, spans}`` with
  ``spans`` a list of ``[start, end)`` character offsets into ``text`` of the trained tokens
  (for DPO: the chosen answer; for packed plain text: the first document, whole). Null when no
  row is usable or there is no model.

Progress goes to stderr: lines for people, or with ``--json`` ``data_progress`` events (JSON
lines ``{stage, done, total, unit, rows}``), so stdout stays one JSON document. The file is
streamed: memory stays bounded for files of several GB.

On an error that stops the check (unreadable or mixed-format file, strict mode, a model without
a chat template), ``--json`` prints ``{"ok": false, "error": {message, file, line, row, field}}``
and exits 1. Exit codes: 0 when rows remain, 1 when none does (or on such an error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from backends.data.columns import parse_columns
from backends.data.pack import pack_examples
from backends.data.pipeline import analyze_file, methods_for_format, token_length_stats
from backends.data.progress import DataProgress
from backends.data.readers import text_files
from backends.data.templates import load_tokenizer
from backends.data.types import IGNORE_INDEX, Example, KTOExample, PreferenceExample
from backends.errors import EXIT_OK, EXIT_USER_INPUT, UserInputError

SHOWN_PROBLEMS = 20
HISTOGRAM_BINS = 20


def _example_view(tokenizer: Any, example: Example | PreferenceExample | KTOExample) -> dict[str, Any]:
    """Decode an example and mark the character spans of its trained tokens."""
    if isinstance(example, PreferenceExample | KTOExample):
        answer = example.chosen_ids if isinstance(example, PreferenceExample) else example.completion_ids
        ids = example.prompt_ids + answer
        trained = [False] * len(example.prompt_ids) + [True] * len(answer)
    else:
        ids = example.input_ids
        trained = [x != IGNORE_INDEX for x in example.labels]

    def decode(upto: int) -> str:
        return tokenizer.decode(ids[:upto], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    spans = []
    t = 0
    while t < len(ids):
        if not trained[t]:
            t += 1
            continue
        start = t
        while t < len(ids) and trained[t]:
            t += 1
        spans.append([len(decode(start)), len(decode(t))])
    return {"row": example.row, "text": decode(len(ids)), "spans": spans}


def check_file(
    path: str | Path,
    model_dir: str | Path | None = None,
    *,
    format: str = "auto",
    max_seq_length: int = 1024,
    strict: bool = False,
    chat_template: str = "model",
    train_on: str = "completion",
    system_prompt: str | None = None,
    method: str | None = None,
    tokenizer: Any | None = None,
    literal_special_tokens: str = "text",
    columns: Any = None,
    progress: DataProgress | None = None,
) -> dict[str, Any]:
    """Check a data file as training would read it; returns the dict described in this module's
    docstring. ``model_dir`` (or an already loaded ``tokenizer``) supplies the tokenizer and chat
    template; without either, only reading and validation are done (no token statistics).
    ``method``: None infers it from the format. Raises UserInputError as ``analyze_file`` does;
    zero usable rows is not raised but reported (``ok`` false)."""
    if tokenizer is None and model_dir is not None:
        tokenizer = load_tokenizer(model_dir)
    examples, report, template, method = analyze_file(
        path,
        tokenizer,
        format=format,
        method=method,
        chat_template=chat_template,
        strict=strict,
        train_on=train_on,
        max_seq_length=max_seq_length,
        system_prompt=system_prompt,
        literal_special_tokens=literal_special_tokens,
        columns=columns,
        progress=progress,
        keep_examples=False,
    )
    # Its notice, from the counts (only the first document is kept); the example stays that document.
    pack_examples(examples, report, max_seq_length, "plain", counts_only=True)
    stats = token_length_stats(report.lengths, max_seq_length)
    histogram = None
    if stats is not None:
        low, high = stats["min"], max(stats["max"], stats["min"] + 1)
        counts, edges = np.histogram(report.lengths, bins=HISTOGRAM_BINS, range=(low, high))
        histogram = {"bins": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}
    return {
        "ok": report.rows_kept > 0,
        "file": report.file,
        "format": report.format,
        "method": method,
        "suits": list(methods_for_format(report.format)),
        "model": str(model_dir) if model_dir is not None else None,
        "chat_template": (chat_template if template is not None else None),
        "max_seq_length": max_seq_length,
        "train_on": train_on,
        "rows_read": report.rows_read,
        "rows_kept": report.rows_kept,
        "rows_dropped": report.rows_dropped,
        "problems": [p.to_dict() for p in report.problems],
        "problem_count": len(report.problems),
        "notices": list(report.notices),
        "literal_special_tokens": [{"row": r, "tokens": t} for r, t in report.literal_specials],
        "token_lengths": stats,
        "histogram": histogram,
        "example": _example_view(tokenizer, examples[0]) if examples else None,
        "columns": report.columns,
        "preview": report.preview,
    }


def _mark(text: str, spans: list[list[int]]) -> str:
    out, at = [], 0
    for start, end in spans:
        out += [text[at:start], "⟦", text[start:end], "⟧"]
        at = end
    out.append(text[at:])
    return "".join(out)


def format_report(result: dict[str, Any]) -> str:
    """The human-readable form of ``check_file``'s dict."""
    where = {"line": "line", "row": "row"}
    lines = [
        f"file:    {result['file']}",
        f"format:  {result['format']} (method {result['method']}; suits {', '.join(result['suits'])})",
    ]
    if result["model"]:
        template = result["chat_template"] or "none"
        lines.append(f"model:   {result['model']} (chat template: {template})")
    renamed = {role: col for role, col in (result.get("columns") or {}).items() if role != col}
    if renamed:
        lines.append("columns: " + ", ".join(f"{role} <- {col}" for role, col in renamed.items()))
    lines.append(
        f"rows:    {result['rows_read']} read, {result['rows_kept']} kept, {result['rows_dropped']} dropped"
    )
    if result["problems"]:
        lines.append(f"problems ({result['problem_count']}, first {SHOWN_PROBLEMS} shown):")
        for p in result["problems"][:SHOWN_PROBLEMS]:
            lines.append(f"  {where[p['where']]} {p['row']}: {p['field']}: {p['reason']}")
    for notice in result["notices"]:
        lines.append(f"notice:  {notice}")
    stats = result["token_lengths"]
    if stats:
        lines.append(
            f"tokens:  min {stats['min']}, median {stats['median']:.0f}, p95 {stats['p95']:.0f}, "
            f"max {stats['max']}; {stats['over_max']} over max_seq_length {result['max_seq_length']}"
        )
        hist = result["histogram"]
        peak = max(hist["counts"]) or 1
        for lo, hi, count in zip(hist["bins"], hist["bins"][1:], hist["counts"], strict=False):
            lines.append(f"  {lo:8.0f}-{hi:<8.0f} {'#' * round(30 * count / peak):30s} {count}")
    example = result["example"]
    if example:
        lines.append(f"example (row {example['row']}; trained text between ⟦ ⟧):")
        lines.append(_mark(example["text"], example["spans"]))
    if not result["ok"]:
        lines.append("no usable rows: nothing to train on")
    return "\n".join(lines)


def _progress(as_json: bool) -> DataProgress:
    """Progress on stderr: lines for people, or (``--json``) ``data_progress`` events as JSON lines,
    so stdout stays the one JSON document."""
    from backends.events import encode, make_event

    if as_json:
        return DataProgress(event=lambda f: print(encode(make_event("data_progress", **f)), file=sys.stderr))
    return DataProgress(say=lambda text: print(text, file=sys.stderr, flush=True), interval=2.0)


def cli_check(args: argparse.Namespace) -> int:
    """Entry of ``tunedesk data check`` (arguments from ``backends.cli``): prints the report
    (``--json``: the dict) and returns 0 when usable rows remain, 1 otherwise."""
    from backends import models
    from backends.config import DEFAULT_MODEL

    try:
        # A missing or unreadable file is reported before the model is loaded (or imported).
        source = Path(args.file)
        if not (source.is_file() or source.is_dir()):
            raise UserInputError(
                "no such file" if not source.exists() else "not a file", file=source, field="file"
            )
        if source.is_dir() and not text_files(source):
            raise UserInputError("the folder holds no .txt or .md file", file=source, field="file")
        columns = parse_columns(args.columns)
        model_dir = models.resolve_model(
            args.model or DEFAULT_MODEL, progress=lambda m: print(m, file=sys.stderr)
        )
        result = check_file(
            args.file,
            model_dir,
            format=args.format,
            max_seq_length=args.max_seq_length,
            strict=args.strict,
            columns=columns,
            progress=_progress(args.json),
        )
    except UserInputError as exc:
        if not args.json:
            raise
        error = {
            "message": str(exc),
            "file": exc.file,
            "line": exc.line,
            "row": getattr(exc, "row", exc.line),
            "field": exc.field,
        }
        print(json.dumps({"ok": False, "error": error}, ensure_ascii=False))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_INPUT
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_report(result))
    if not result["ok"]:  # the one line a caller (the app) shows: why nothing is usable
        first = result["problems"][0] if result["problems"] else None
        why = (
            f"; first: {first['where']} {first['row']}: {first['field']}: {first['reason']}" if first else ""
        )
        print(
            f"error: {result['file']}: no usable rows: {result['rows_read']} read, all dropped{why}",
            file=sys.stderr,
        )
    return EXIT_OK if result["ok"] else EXIT_USER_INPUT
