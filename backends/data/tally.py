"""What ``analyze_file`` counts while it streams a file: rows kept, dropped and why, cut rows,
literal special tokens, and the notices and strict-mode errors built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.data.columns import source_field
from backends.data.encode import Encoder, encode_rows
from backends.data.folder.skeleton import UNFILLED_REASON, is_unfilled
from backends.data.formats import CHAT_FORMATS, Feedback, Preference, RowError, parse_row
from backends.data.readers import BadRow
from backends.data.rowstream import row_error, where
from backends.data.types import DataReport, Problem, PromptExample


def _kind(fmt: str) -> str:
    return "chat" if fmt in CHAT_FORMATS else fmt


class Tally:
    """What ``analyze_file`` counts while streaming: rows kept, dropped and why, for the report."""

    def __init__(self, path: Path, unit: str, source: Any, columns: dict[str, str], strict: bool) -> None:
        self.path, self.unit, self.source, self.columns, self.strict = path, unit, source, columns, strict
        self.valid = self.kept = 0
        self.invalid = 0  # rows dropped by validation (strict: an error at the end)
        self.same: list[int] = []
        self.cut: list[int] = []
        self.too_long: list[int] = []
        self.strict_drop: Problem | None = None
        self.drops = 0
        self.unfilled: list[int] = []
        self.pack_to: int | None = None  # max_seq_length when plain text is packed
        self.pack_tokens = 0  # then the kept documents' tokens (the packing notice of data check)

    def problem(self, number: int, field: str, reason: str) -> Problem:
        return Problem(
            str(self.source.file_of(number)), number, source_field(field, self.columns), reason, self.unit
        )

    def parse(self, fmt: str, number: int, obj: Any, report: DataReport) -> Any:
        """The validated row, or None after recording why it is dropped."""
        if isinstance(obj, BadRow):
            report.problems.append(self.problem(number, "(line)", obj.reason))
            self.invalid += 1
            return None
        if fmt == "prompt_completion" and is_unfilled(obj):
            report.problems.append(self.problem(number, "completion", UNFILLED_REASON))
            self.unfilled.append(number)
            return None
        try:
            parsed = parse_row(fmt, obj)  # the renderer adds the system prompt
        except RowError as err:
            report.problems.append(self.problem(number, err.field, err.reason))
            self.invalid += 1
            return None
        if isinstance(parsed, Preference) and parsed.chosen.strip() == parsed.rejected.strip():
            # No preference signal: the DPO loss of such a pair is ln 2 with zero gradient.
            reason = "identical to chosen: the pair carries no preference; dropped"
            report.problems.append(self.problem(number, "rejected", reason))
            self.same.append(number)
            return None
        return parsed

    def finish(self, report: DataReport, encoder: Any, max_seq_length: int, policy: str) -> None:
        """Raise the strict-mode error, or add the notices about dropped and cut rows."""
        report.problems.sort(key=lambda p: p.row)
        if self.strict and (self.invalid or self.same or self.unfilled):
            p = report.problems[0]
            more = len(report.problems) - 1
            raise row_error(
                p.file,
                self.unit,
                p.row,
                p.field,
                p.reason + (f"; and {more} more invalid row(s)" if more else ""),
                hint="strict mode: fix the rows or turn off data.strict to drop them",
            )
        if self.strict and self.strict_drop is not None:
            p, more = self.strict_drop, self.drops - 1
            raise row_error(
                p.file,
                self.unit,
                p.row,
                p.field,
                p.reason + (f"; and {more} more dropped row(s)" if more else ""),
                hint="strict mode: fix the rows (or raise training.max_seq_length), or turn off data.strict to drop them",
            )
        if self.unfilled:
            report.notices.append(
                f"{len(self.unfilled)} unfilled question-and-answer row(s) (from `data from-folder --mode qa`) "
                f"dropped until prompt and completion are written (first: {where(self.unit, self.unfilled[0])})"
            )
        if self.invalid + len(self.same):
            report.notices.append(f"{self.invalid + len(self.same)} invalid row(s) dropped")
        if self.same:
            listed = ", ".join(str(r) for r in self.same[:10]) + (", ..." if len(self.same) > 10 else "")
            report.notices.append(
                f"{len(self.same)} pair(s) with identical chosen and rejected answers dropped: no "
                f"preference to learn ({self.unit}s {listed})"
            )
        if self.too_long:
            listed = ", ".join(str(r) for r in self.too_long[:10]) + (
                ", ..." if len(self.too_long) > 10 else ""
            )
            report.notices.append(
                f"{len(self.too_long)} row(s) dropped: no trained token fits within max_seq_length "
                f"{max_seq_length} ({self.unit}s {listed}; each is listed under problems)"
            )
        if self.cut:
            report.notices.append(
                f"{len(self.cut)} row(s) longer than max_seq_length {max_seq_length} were cut from the right "
                f"(first: {where(self.unit, self.cut[0])})"
            )
        if encoder is not None and encoder.turns_without_stop:
            report.notices.append(
                f"{encoder.turns_without_stop} assistant turn(s) end with no special token in this chat "
                "template, so the model may not learn where to stop"
            )
        if encoder is not None:
            _literal_notice(report, self.unit, policy)


def encode_chunk(
    encoder: Encoder,
    fmt: str,
    method: str,
    rows: list[tuple[int, Any]],
    report: DataReport,
    state: Tally,
    examples: list,
    keep: bool,
) -> None:
    """Tokenise one chunk of validated rows into ``examples`` (all, or with ``keep`` False only
    the file's first), recording lengths, cut rows and dropped rows in ``report`` / ``state``."""
    _find_literal_specials(encoder, rows, report)
    kind = _kind(fmt)
    if method == "grpo":  # the prompt and its reference answer, tokenised as a rated answer
        rows, kind = [(n, Feedback(m[:-1], m[-1]["content"], True)) for n, m in rows], "feedback"
    for r in encode_rows(encoder, kind, rows):
        if r.length is not None:
            report.lengths.append(r.length)
        if r.example is None:
            assert r.error is not None
            problem = state.problem(r.row, r.error.field, r.error.reason)
            report.problems.append(problem)
            state.drops += 1
            state.strict_drop = state.strict_drop or problem
            if r.error.field == "(length)":
                state.too_long.append(r.row)
            continue
        if method == "grpo":
            r.example = PromptExample(r.example.prompt_ids, r.example.completion_ids, r.row)
        state.kept += 1
        if state.pack_to is not None:
            state.pack_tokens += len(r.example.input_ids)
        if keep or not examples:
            examples.append(r.example)  # without keep: the first only (data check's example)
        if r.length is not None and r.length > encoder.max_seq_length:
            state.cut.append(r.row)


def _find_literal_specials(encoder: Encoder, valid: list[tuple[int, Any]], report: DataReport) -> None:
    """Record rows whose message text spells a special token."""
    for number, parsed in valid:
        if isinstance(parsed, Preference):
            messages = [*parsed.prompt, {"role": "assistant", "content": parsed.chosen}]
            messages.append({"role": "assistant", "content": parsed.rejected})
        elif isinstance(parsed, list):
            messages = parsed
        else:
            continue
        found = encoder.literal_specials(messages)
        if found:
            report.literal_specials.append((number, sorted(set(found))))


def _literal_notice(report: DataReport, unit: str, policy: str) -> None:
    """The notice naming the first row whose text spells a special token."""
    if report.literal_specials:
        number, found = report.literal_specials[0]
        how = (
            "trained as plain text, never as control tokens (data.literal_special_tokens: control to "
            "train them as the control tokens)"
            if policy == "text"
            else "trained as the control tokens (data.literal_special_tokens: control)"
        )
        report.notices.append(
            f"{len(report.literal_specials)} row(s) contain special-token strings in their text "
            f"(first: {where(unit, number)}: {', '.join(found)}): {how}"
        )
