"""The data pipeline from a file to tokenised examples: read -> detect -> validate -> tokenise -> split.

``read_rows`` reads a file and detects (or takes) its format; ``analyze_file`` validates and
tokenises one file and reports what it did (used by ``prepare_data`` and ``data check``);
``prepare_data`` does both files of a run config and the validation split.

Policy (issue 3): invalid rows are dropped and listed, or with ``strict`` the first one is an
error; a file with zero usable rows is always an error saying why. Every error names the file,
the row (the line for JSONL) and the field.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backends import paths
from backends.data.columns import report_mapping
from backends.data.encode import CHUNK_ROWS, Encoder
from backends.data.pack import pack_examples
from backends.data.progress import DataProgress, as_progress
from backends.data.render import RenderSpec
from backends.data.replay import mix_replay, replay_source
from backends.data.rowstream import RowList, open_rows, read_rows, row_error
from backends.data.run_prompt import spec_from_config
from backends.data.tally import Tally, encode_chunk
from backends.data.templates import CHATML_TEMPLATE, model_template, resolve_chat_template
from backends.data.types import DataReport, PreparedData
from backends.errors import UserInputError

Progress = Callable[[str], None]

# The built-in sample data (written by the demo/trainer part): `messages` rows.
SAMPLE_DATA = Path("demo") / "support_train.jsonl"

__all__ = ["RowList", "analyze_file", "prepare_data", "read_rows", "row_error"]  # re-exported names too


# Which training methods each format suits (``data check`` shows it; ``_check_method`` enforces it).
METHODS_FOR_FORMAT = {"preference": ("dpo", "orpo"), "feedback": ("kto",), "text": ("sft",)}


def methods_for_format(fmt: str) -> tuple[str, ...]:
    """The methods a file of format ``fmt`` can be trained with (the first is the default): GRPO
    takes any conversation, whose last assistant turn is the reference answer of its rewards."""
    return METHODS_FOR_FORMAT.get(fmt, ("sft", "grpo"))


def _check_method(path: Path, fmt: str, method: str | None) -> str:
    suits = methods_for_format(fmt)
    if method in (None, "auto"):
        return suits[0]
    if method in suits:
        return method
    if fmt == "feedback":
        reason = (
            "this file holds unpaired feedback (an answer with label true/false): training it with "
            f"method {method!r} would learn the bad answers too; train it with method 'kto'"
        )
    elif fmt == "preference":
        reason = "this file holds preference pairs (chosen/rejected): train it with method 'dpo' or 'orpo'"
    elif method == "grpo":
        reason = f"method 'grpo' needs conversations whose last assistant turn is the reference answer, but this file is {fmt!r}"
    elif method in ("dpo", "orpo"):
        reason = (
            f"method {method!r} needs preference pairs (prompt/chosen/rejected), but this file is {fmt!r}"
        )
    else:
        reason = (
            f"method {method!r} needs unpaired feedback (prompt/completion or messages with label "
            f"true/false), but this file is {fmt!r}"
        )
    raise UserInputError(reason, file=path, field="method")


def template_for(tokenizer: Any, choice: str, fmt: str) -> str | None:
    """The template a file of format ``fmt`` needs: plain text needs none (the model's, or ChatML
    when chosen, is still carried for chat); every other format needs one (see
    ``resolve_chat_template`` for the error when the model has none)."""
    if fmt == "text":
        return CHATML_TEMPLATE if choice == "chatml" else model_template(tokenizer)
    return resolve_chat_template(tokenizer, choice)


def analyze_file(
    path: str | Path,
    tokenizer: Any | None,
    *,
    format: str = "auto",
    method: str | None = None,
    chat_template: str = "model",
    strict: bool = False,
    train_on: str = "completion",
    max_seq_length: int = 1024,
    system_prompt: str | None = None,
    literal_special_tokens: str = "text",
    pack_text: bool = True,
    progress: DataProgress | Progress | None = None,
    columns: Any = None,
    keep_examples: bool = True,
) -> tuple[list, DataReport, str | None, str]:
    """Read, validate and (with a tokenizer) tokenise one file as a stream, without raising for
    zero rows.

    Returns (examples, report, template, method): ``examples`` are ``Example`` (sft) or
    ``PreferenceExample`` (dpo) in file order (empty without a tokenizer; with ``keep_examples``
    False only the first, so memory stays bounded for ``data check`` on a file of several GB);
    ``template`` is the chat template used (None without a tokenizer, or for text data on a model
    without one); ``method`` is the given one or, for None/'auto', the format's default.
    ``columns``: the column mapping ``{role: source column}`` (``backends.data.columns``);
    ``report.columns`` / ``report.preview`` give the applied mapping and the first rows.
    Raises UserInputError for an unreadable or mixed-format file, a format/method mismatch, a
    missing chat template, or (``strict``) the first dropped row (malformed line, invalid, too long
    for ``max_seq_length``, or one the template cannot render), naming file and line.
    ``pack_text``: plain text (format 'text', method 'sft') is returned as whole documents, not
    cut, with ``report.packed_text`` set: ``pack_examples`` joins and cuts them.
    ``report.literal_specials`` lists the rows whose text spells a special token (e.g. a literal
    ``<|im_end|>``), which ``literal_special_tokens`` ('text' or 'control') decides how to tokenise.
    """
    path = Path(path)
    if strict and tokenizer is not None:  # an invalid row stops the check before any tokenising
        analyze_file(path, None, format=format, method=method, strict=True, columns=columns)
    progress = as_progress(progress)
    progress.message(f"reading {path}")
    stream = open_rows(path, format, columns)
    fmt, unit, source = stream.format, stream.unit, stream.source
    method = _check_method(path, fmt, method)
    report = DataReport(file=str(path), format=fmt)
    report.columns = report_mapping(fmt, stream.columns, stream.preview["columns"])
    report.preview = stream.preview
    template = encoder = None
    packing = pack_text and fmt == "text" and method == "sft"
    if tokenizer is not None:
        template = template_for(tokenizer, chat_template, fmt)
        spec = RenderSpec(
            template,
            template_choice=chat_template,
            system_prompt=system_prompt or None,
            special_tokens=literal_special_tokens,
        )
        limit = sys.maxsize if packing else max_seq_length  # packed documents are cut after joining
        encoder = Encoder(tokenizer, spec, train_on=train_on, max_seq_length=limit)
    state = Tally(path, unit, source, stream.columns, strict)
    state.pack_to = max_seq_length if packing else None
    examples: list = []
    pending: list[tuple[int, Any]] = []

    def flush() -> None:
        if encoder is not None and pending and not (strict and (state.invalid or state.same)):
            encode_chunk(encoder, fmt, method, pending, report, state, examples, keep_examples)
        else:
            state.valid += len(pending)
        pending.clear()

    for number, obj in stream.rows():
        report.rows_read += 1
        parsed = state.parse(fmt, number, obj, report)
        if parsed is not None:
            pending.append((number, parsed))
            if len(pending) >= CHUNK_ROWS:
                flush()
        progress.reading(path.name, source.done, source.total, source.measure, report.rows_read)
    flush()
    progress.reading(path.name, source.done, source.total, source.measure, report.rows_read, final=True)
    if report.rows_read == 0:
        raise UserInputError("the file has no rows", file=path)
    state.finish(report, encoder, max_seq_length, literal_special_tokens)
    report.rows_kept = state.kept if encoder is not None else state.valid
    if encoder is None:
        return [], report, None, method
    if packing:  # whole documents, uncut (no "cut" notice): pack_examples joins and cuts them
        report.packed_text, report.packed_tokens = True, state.pack_tokens
        for e in examples:  # in the joined stream a document's first token is a target, BOS aside
            if not encoder.adds_bos:
                e.labels[0] = e.input_ids[0]
    return examples, report, template, method


def no_rows_error(report: DataReport, unit: str | None = None) -> UserInputError:
    """The error for a file with zero usable rows, naming the first problems."""
    shown = "; ".join(str(p) for p in report.problems[:5])
    more = f"; and {len(report.problems) - 5} more" if len(report.problems) > 5 else ""
    first = report.problems[0] if report.problems else None
    return UserInputError(
        f"no usable rows: {report.rows_read} read, all dropped" + (f": {shown}{more}" if shown else ""),
        file=report.file,
        line=first.row if first and first.where == "line" else None,
        field=first.field if first else None,
    )


def _cap_validation(validation: list, max_rows: int, seed: int, report: DataReport) -> list:
    """At most ``max_rows`` validation examples (0: all), a seeded sample kept in file order."""
    if not max_rows or len(validation) <= max_rows:
        return validation
    keep = set(np.random.default_rng(seed).permutation(len(validation))[:max_rows].tolist())
    report.notices.append(
        f"validation: {max_rows} of {len(validation)} rows used (data.validation_max_rows {max_rows})"
    )
    return [e for i, e in enumerate(validation) if i in keep]


def _split(
    examples: list, fraction: float, seed: int, report: DataReport, max_rows: int = 0
) -> tuple[list, list | None]:
    if fraction <= 0:
        report.notices.append("validation is off (no data.validation_file and data.validation_fraction is 0)")
        return examples, None
    n = len(examples)
    if n < 2:
        report.notices.append(f"validation is off: only {n} usable row(s), none to hold out")
        return examples, None
    n_val = min(n - 1, max(1, round(fraction * n)))
    capped = bool(max_rows) and n_val > max_rows
    if capped:
        n_val = max_rows
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    report.notices.append(
        f"validation: {n_val} of {n} rows held out (data.validation_fraction {fraction}"
        + (f", at most data.validation_max_rows {max_rows}" if capped else "")
        + f", seed {seed})"
    )
    return [e for i, e in enumerate(examples) if i not in held], [
        e for i, e in enumerate(examples) if i in held
    ]


def sample_data_path() -> Path:
    """The built-in sample data file used when ``data.train_file`` is empty."""
    return paths.resources_dir() / SAMPLE_DATA


def prepare_data(config: Any, tokenizer: Any, *, progress: Progress | None = None) -> PreparedData:
    """Tokenised training and validation data for a run.

    Reads ``config.data.train_file`` (None: the built-in sample data), validates and tokenises it
    with the model's chat template (``data.chat_template``), ``data.format``, ``data.strict``,
    ``data.train_on``, ``data.system_prompt`` and ``training.max_seq_length``; validation comes
    from ``data.validation_file`` or a ``data.validation_fraction`` of the usable rows chosen with
    ``training.seed`` (at least one row; otherwise validation is off with a notice), at most
    ``data.validation_max_rows`` of them. With ``data.replay`` general examples join the training
    split (``backends.data.replay``).
    Returns ``PreparedData`` with ``Example`` lists for method 'sft' and ``PreferenceExample``
    lists for 'dpo'. Raises UserInputError (exit 1) naming file, row and field when a file is
    unreadable, mixes formats, does not fit the method, (strict) has an invalid row, or has no
    usable row; or when the model has no chat template and ``data.chat_template`` is 'model'.
    """
    data = config.data
    path = Path(data.train_file) if data.train_file is not None else sample_data_path()
    if data.train_file is None and not path.is_file():
        raise UserInputError(
            "no training data: data.train_file is empty and the built-in sample data is missing",
            file=path,
            field="data.train_file",
        )
    options = dict(
        format=data.format,
        method=config.method,
        chat_template=data.chat_template,
        strict=data.strict,
        train_on=data.train_on,
        max_seq_length=config.training.max_seq_length,
        system_prompt=data.system_prompt,
        literal_special_tokens=data.literal_special_tokens,
        pack_text=data.pack_text,
        progress=progress,
        columns=data.columns,
    )
    train, report, template, method = analyze_file(path, tokenizer, **options)
    if not train:
        raise no_rows_error(report)
    validation: list | None
    val_report = None
    if data.validation_file is not None:
        validation, val_report, _, _ = analyze_file(Path(data.validation_file), tokenizer, **options)
        if not validation:
            raise no_rows_error(val_report)
        report.notices.append(f"validation: {len(validation)} rows from {data.validation_file}")
        validation = _cap_validation(validation, data.validation_max_rows, config.training.seed, report)
    else:
        train, validation = _split(
            train, data.validation_fraction, config.training.seed, report, data.validation_max_rows
        )
    length = config.training.max_seq_length
    train = pack_examples(train, report, length, "training")
    validation = pack_examples(validation, val_report or report, length, "validation")
    if data.replay and method == "sft":
        source = replay_source(data.replay_file)
        general, replay_report, _, _ = analyze_file(
            source, tokenizer, **{**options, "format": "auto", "columns": None}
        )
        if not general:
            raise no_rows_error(replay_report)
        general = pack_examples(general, replay_report, length, "replay")
        train = mix_replay(train, general, data.replay, config.training.seed, report, source)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PreparedData(
        train=train,
        validation=validation,
        report=report,
        chat_template=template,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad if pad is not None else 0,
        bos_token_id=tokenizer.bos_token_id,
        validation_report=val_report,
        method=method,
        render_spec=spec_from_config(config, tokenizer) if template is not None else None,
    )


def token_length_stats(lengths: Sequence[int], max_seq_length: int) -> dict[str, Any] | None:
    """{min, median, p95, max, over_max} of token lengths (None when there are none); ``p95`` is
    numpy's linear-interpolated 95th percentile; ``over_max`` counts lengths > max_seq_length."""
    if not lengths:
        return None
    arr = np.asarray(lengths)
    return {
        "min": int(arr.min()),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "over_max": int((arr > max_seq_length).sum()),
    }
