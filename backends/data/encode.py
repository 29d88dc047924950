"""Tokenisation with the chat template and completion-only labels.

How the trained spans are found (never by searching marker tokens in token ids):

1. Render the whole conversation with the template (``full``).
2. For assistant turn i, render the conversation before it with the generation prompt (``P_i``)
   and the conversation up to and including it (``Q_i``). When ``full`` starts with both (true of
   every common template), the turn's text is ``full[len(P_i):len(Q_i)]``: the answer plus
   whatever the template closes the turn with (``<|im_end|>``, ``<|eot_id|>``, ``</s>`` ...).
   Templates that rewrite earlier turns fall back to locating the turn's content after the
   previous turn and extending over the special tokens that follow it.
3. Whitespace after the closing special token (ChatML's ``\\n``) is not trained: it belongs to the
   next prompt, and at chat time generation stops at the special token.

The rendered text is cut at those character offsets into alternating untrained / trained
segments, and each segment is tokenised on its own (one batched call of the fast tokenizer for
a chunk of rows). So the prompt's tokens are exactly those chat will feed the model
(``apply_chat_template(..., add_generation_prompt=True)``), no token straddles a boundary, and no
leading space of an answer merges into the prompt. Segments after the first are encoded behind a
newline that is then removed again, as transformers does for chat pieces, so SentencePiece
tokenizers do not add their start-of-text space in the middle of a conversation.

Other rules: exactly one BOS where the tokenizer adds one (a template that renders BOS and a
tokenizer that adds it do not give two); plain text rows get EOS appended and labelled;
truncation keeps the first ``max_seq_length`` tokens; a row left with no target after the causal
shift is dropped (it would give a 0/0 loss).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.data.formats import Message, Preference, RowError
from backends.data.templates import render
from backends.data.types import IGNORE_INDEX, Example, PreferenceExample

CHUNK_ROWS = 2000


@dataclass
class Encoded:
    """The outcome for one row: an example, or the reason it was dropped; ``length`` is the token
    length before truncation (None when the row could not be tokenised)."""

    row: int
    example: Example | PreferenceExample | None
    length: int | None
    error: RowError | None = None


class Encoder:
    """Tokenises validated rows for one tokenizer, template and label policy.

    ``train_on``: 'completion' (every assistant turn), 'last_turn', or 'all' (every token).
    ``max_seq_length``: tokens kept per row (for DPO: prompt plus answer).
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str | None,
        *,
        train_on: str = "completion",
        max_seq_length: int = 1024,
    ) -> None:
        if train_on not in ("completion", "last_turn", "all"):
            raise ValueError(f"train_on must be completion, last_turn or all, not {train_on!r}")
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on
        self.max_seq_length = max_seq_length
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        self.adds_bos = (
            self.bos_id is not None and len(with_special) > len(plain) and with_special[0] == self.bos_id
        )
        specials = set(getattr(tokenizer, "added_tokens_encoder", {}) or {}) | set(
            tokenizer.all_special_tokens
        )
        # Special-token strings by length, longest first: suffix/prefix tests are set lookups.
        self.special_strings = {s for s in specials if s}
        self.special_lengths = sorted({len(s) for s in self.special_strings}, reverse=True)
        self.newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
        after_newline = tokenizer("\na", add_special_tokens=False)["input_ids"]
        # SentencePiece-style tokenizers add a space at the start of every encoded string; encoding
        # a mid-conversation segment behind a newline (then removing it) avoids that.
        self.mid_text_trick = after_newline[: len(self.newline_ids)] == self.newline_ids and (
            after_newline[len(self.newline_ids) :] != plain
        )
        self.turns_without_stop = 0  # assistant turns that end with no special token (notice)

    # ---- rendering -------------------------------------------------------------------------

    def _render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        try:
            return render(
                self.tokenizer, self.template, messages, add_generation_prompt=add_generation_prompt
            )
        except Exception as exc:  # a template's raise_exception or a type error inside it
            raise RowError("(row)", f"the chat template cannot render this row: {exc}") from None

    def _ends_with_special(self, text: str) -> bool:
        return any(text[-n:] in self.special_strings for n in self.special_lengths if n <= len(text))

    def _special_at(self, text: str, at: int) -> int:
        """Length of the (longest) special-token string starting at ``text[at]``, else 0."""
        return next((n for n in self.special_lengths if text[at : at + n] in self.special_strings), 0)

    def _extend_over_specials(self, full: str, end: int) -> int:
        while True:
            gap = len(full) - end - len(full[end:].lstrip(" "))
            n = self._special_at(full, end + gap)
            if n == 0:
                return end
            end += gap + n

    def _turn_span(
        self, full: str, before: list[Message], through: list[Message] | None, content: str, cursor: int
    ) -> tuple[int, int]:
        """Character span [start, end) in ``full`` of the assistant turn that follows ``before``.

        ``through``: the conversation up to and including that turn, or None when it is all of
        ``full``. Raises RowError when the turn cannot be located.
        """
        prompt = self._render(before, add_generation_prompt=True)
        upto = full if through is None else self._render(through)
        if full.startswith(prompt) and full.startswith(upto) and cursor <= len(prompt) < len(upto):
            start, end = len(prompt), len(upto)
        else:
            # Search after the previous turn and after where the prompt and the full rendering
            # part (so an answer that also occurs in the prompt is not matched there).
            shared = len(os.path.commonprefix([prompt, full]))
            start = full.find(content, max(cursor, shared))
            if start < 0:
                start = full.find(content, cursor)
            if start < 0:
                raise RowError(
                    "(row)", "the chat template changes the assistant's text, so its span cannot be found"
                )
            end = self._extend_over_specials(full, start + len(content))
        text = full[start:end]
        stripped = text.rstrip()
        if len(stripped) < len(text) and self._ends_with_special(stripped):
            end = start + len(stripped)
        if not self._ends_with_special(full[start:end]):
            self.turns_without_stop += 1
        return start, end

    def chat_segments(self, messages: list[Message]) -> list[tuple[str, bool]]:
        """The rendered conversation cut into (text, trained) segments, in order; their
        concatenation is the full rendering. Raises RowError."""
        full = self._render(messages)
        spans: list[tuple[int, int]] = []
        cursor = 0
        last = len(messages) - 1
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            through = None if i == last else messages[: i + 1]
            start, end = self._turn_span(full, messages[:i], through, m["content"], cursor)
            spans.append((start, end))
            cursor = end
        if not spans:
            raise RowError("(row)", "no assistant turn")
        trained = set(range(len(spans))) if self.train_on != "last_turn" else {len(spans) - 1}
        segments: list[tuple[str, bool]] = []
        cursor = 0
        for k, (start, end) in enumerate(spans):
            segments.append((full[cursor:start], self.train_on == "all"))
            segments.append((full[start:end], self.train_on == "all" or k in trained))
            cursor = end
        segments.append((full[cursor:], self.train_on == "all"))
        return segments

    def preference_texts(self, pref: Preference) -> tuple[str, str, str]:
        """(prompt text with the generation prompt, chosen turn text, rejected turn text), each
        answer ending with the template's end-of-turn. Raises RowError."""
        prompt = self._render(pref.prompt, add_generation_prompt=True)
        answers = []
        for content in (pref.chosen, pref.rejected):
            messages = [*pref.prompt, {"role": "assistant", "content": content}]
            full = self._render(messages)
            start, end = self._turn_span(full, pref.prompt, None, content, 0)
            answers.append(full[start:end])
        return prompt, answers[0], answers[1]

    # ---- tokenising ------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str], at_start: Sequence[bool]) -> list[list[int]]:
        """Token ids of each text (no special tokens added), in one batched call. ``at_start``
        marks texts that begin a sequence; the others are encoded as mid-conversation text."""
        wrapped = [
            t if (first or not t or not self.mid_text_trick) else "\n" + t
            for t, first in zip(texts, at_start, strict=True)
        ]
        nonempty = [i for i, t in enumerate(wrapped) if t]
        out: list[list[int]] = [[] for _ in wrapped]
        if nonempty:
            ids = self.tokenizer(
                [wrapped[i] for i in nonempty],
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            for i, seq in zip(nonempty, ids, strict=True):
                out[i] = list(seq)
        if self.mid_text_trick:
            n = len(self.newline_ids)
            for i, first in enumerate(at_start):
                if not first and texts[i]:
                    if out[i][:n] == self.newline_ids:
                        out[i] = out[i][n:]
                    else:
                        out[i] = list(self.tokenizer(texts[i], add_special_tokens=False)["input_ids"])
        return out

    def _with_bos(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        if self.adds_bos and (not ids or ids[0] != self.bos_id):
            ids, labels = [self.bos_id, *ids], [IGNORE_INDEX, *labels]
        while self.bos_id is not None and len(ids) >= 2 and ids[0] == ids[1] == self.bos_id:
            ids, labels = ids[1:], labels[1:]
        if labels:
            labels[0] = IGNORE_INDEX  # position 0 is never a target after the causal shift
        return ids, labels

    def _finish(self, row: int, ids: list[int], labels: list[int]) -> Encoded:
        length = len(ids)
        ids, labels = ids[: self.max_seq_length], labels[: self.max_seq_length]
        if labels[1:].count(IGNORE_INDEX) == len(labels) - 1:  # no target after the shift
            first = next((i for i, x in enumerate(labels) if x != IGNORE_INDEX), None)
            at = f"; its first trained token is at position {first}" if first is not None else ""
            return Encoded(
                row,
                None,
                length,
                RowError(
                    "(length)",
                    f"no trained token within max_seq_length {self.max_seq_length} (the row has {length} tokens{at}); dropped",
                ),
            )
        return Encoded(row, Example(ids, labels, row), length)

    def encode_chat(self, rows: Sequence[tuple[int, list[Message]]]) -> list[Encoded]:
        """Tokenise validated conversations (each ends with an assistant turn)."""
        results: list[Encoded | None] = [None] * len(rows)
        texts: list[str] = []
        starts: list[bool] = []
        plan: list[tuple[int, int, list[bool]]] = []  # (result index, first text index, trained flags)
        for k, (row, messages) in enumerate(rows):
            try:
                segments = self.chat_segments(messages)
            except RowError as err:
                results[k] = Encoded(row, None, None, err)
                continue
            plan.append((k, len(texts), [t for _, t in segments]))
            texts += [s for s, _ in segments]
            starts += [j == 0 for j in range(len(segments))]
        ids = self.encode_texts(texts, starts)
        for k, first, flags in plan:
            seq: list[int] = []
            labels: list[int] = []
            for j, trained in enumerate(flags):
                part = ids[first + j]
                seq += part
                labels += part if trained else [IGNORE_INDEX] * len(part)
            seq, labels = self._with_bos(seq, labels)
            results[k] = self._finish(rows[k][0], seq, labels)
        return results  # type: ignore[return-value]

    def encode_text(self, rows: Sequence[tuple[int, str]]) -> list[Encoded]:
        """Tokenise plain text rows: BOS where the tokenizer adds one, the text, then EOS; every
        token but BOS is trained."""
        ids = self.encode_texts([t for _, t in rows], [True] * len(rows))
        out = []
        for (row, _), seq in zip(rows, ids, strict=True):
            seq = list(seq) + ([self.eos_id] if self.eos_id is not None else [])
            seq, labels = self._with_bos(seq, list(seq))
            out.append(self._finish(row, seq, labels))
        return out

    def encode_preference(self, rows: Sequence[tuple[int, Preference]]) -> list[Encoded]:
        """Tokenise preference pairs: the prompt once, each answer on its own (ending with the
        end-of-turn token). Answers are cut so prompt + answer fits ``max_seq_length``; a pair
        with no room for either answer, or whose answers are identical once cut, is dropped."""
        results: list[Encoded | None] = [None] * len(rows)
        texts: list[str] = []
        starts: list[bool] = []
        plan: list[tuple[int, int]] = []
        for k, (row, pref) in enumerate(rows):
            try:
                prompt, chosen, rejected = self.preference_texts(pref)
            except RowError as err:
                results[k] = Encoded(row, None, None, err)
                continue
            plan.append((k, len(texts)))
            texts += [prompt, chosen, rejected]
            starts += [True, False, False]
        ids = self.encode_texts(texts, starts)
        for k, first in plan:
            row = rows[k][0]
            prompt_ids, _ = self._with_bos(ids[first], [IGNORE_INDEX] * len(ids[first]))
            chosen, rejected = ids[first + 1], ids[first + 2]
            length = len(prompt_ids) + max(len(chosen), len(rejected))
            room = self.max_seq_length - len(prompt_ids)
            if room < 1:
                err = RowError(
                    "(length)",
                    f"the prompt alone has {len(prompt_ids)} tokens, no room for an answer within "
                    f"max_seq_length {self.max_seq_length}; dropped",
                )
                results[k] = Encoded(row, None, length, err)
                continue
            if chosen[:room] == rejected[:room]:
                err = RowError(
                    "rejected",
                    f"identical to chosen within max_seq_length {self.max_seq_length} (the answers "
                    "differ only in tokens that were cut); dropped",
                )
                results[k] = Encoded(row, None, length, err)
                continue
            results[k] = Encoded(
                row, PreferenceExample(prompt_ids, chosen[:room], rejected[:room], row), length
            )
        return results  # type: ignore[return-value]


def encode_rows(
    encoder: Encoder,
    kind: str,
    rows: Sequence[tuple[int, Any]],
    progress: Callable[[str], None] | None = None,
) -> list[Encoded]:
    """Tokenise validated rows of one kind ('chat', 'text', 'preference' or 'feedback') in chunks, reporting
    progress as "tokenised N/M rows"."""
    from backends.data.feedback import encode_feedback  # it builds on this module

    fn = {
        "chat": encoder.encode_chat,
        "text": encoder.encode_text,
        "preference": encoder.encode_preference,
        "feedback": lambda rows: encode_feedback(encoder, rows),
    }[kind]
    out: list[Encoded] = []
    for i in range(0, len(rows), CHUNK_ROWS):
        out += fn(rows[i : i + CHUNK_ROWS])
        if progress is not None:
            progress(f"tokenised {min(i + CHUNK_ROWS, len(rows))}/{len(rows)} rows")
    return out
