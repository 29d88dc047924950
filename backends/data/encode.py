"""Training examples from validated rows: completion-only labels, truncation, preference pairs.

The rendering, the cutting into trained / untrained segments, the BOS rule and the special-token
policy are the prompt renderer's (``backends.data.render.PromptRenderer``, which ``Encoder``
extends), so training tokenises exactly as chat does. Here: plain text rows get EOS appended and
labelled; truncation keeps the first ``max_seq_length`` tokens; a row left with no target after
the causal shift is dropped (it would give a 0/0 loss); rows are tokenised in batched chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.data.formats import Message, Preference, RowError
from backends.data.render import PromptRenderer, RenderSpec
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


class Encoder(PromptRenderer):
    """Tokenises validated rows for one tokenizer, template and label policy.

    ``template``: the chat template text, or a full ``RenderSpec`` (system prompt, BOS rule,
    special-token policy). ``train_on``: 'completion' (every assistant turn), 'last_turn', or
    'all' (every token). ``max_seq_length``: tokens kept per row (for DPO: prompt plus answer).
    """

    def __init__(
        self,
        tokenizer: Any,
        template: RenderSpec | str | None,
        *,
        train_on: str = "completion",
        max_seq_length: int = 1024,
    ) -> None:
        super().__init__(tokenizer, template, train_on=train_on)
        self.max_seq_length = max_seq_length

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
        pieces: list[tuple[str, bool, bool, int]] = []
        plan: list[
            tuple[int, int, int, list[tuple[str, bool]]]
        ] = []  # (result, first piece, count, segments)
        for k, (row, messages) in enumerate(rows):
            try:
                segments, literals = self.chat_segments(messages, tools=getattr(messages, "tools", None))
            except RowError as err:
                results[k] = Encoded(row, None, None, err)
                continue
            own = self.pieces(segments, literals)
            plan.append((k, len(pieces), len(own), segments))
            pieces += own
        ids = self.encode_texts([p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
        for k, first, count, segments in plan:
            seq, labels = self.join_pieces(
                segments, pieces[first : first + count], ids[first : first + count]
            )
            results[k] = self._finish(rows[k][0], seq, labels)
        return results  # type: ignore[return-value]

    def encode_text(self, rows: Sequence[tuple[int, str]]) -> list[Encoded]:
        """Tokenise plain text rows: BOS where the tokenizer adds one, the text, then EOS; every
        token but BOS is trained."""
        ids = self.encode_texts([t for _, t in rows], [True] * len(rows))
        out = []
        for (row, _), seq in zip(rows, ids, strict=True):
            seq = list(seq) + ([self.eos_id] if self.eos_id is not None else [])
            seq, labels = self.with_bos(seq, list(seq))
            out.append(self._finish(row, seq, labels))
        return out

    def encode_preference(self, rows: Sequence[tuple[int, Preference]]) -> list[Encoded]:
        """Tokenise preference pairs: the prompt once (cut and tokenised as chat renders it), each
        answer on its own (ending with the end-of-turn token). Answers are cut so prompt + answer
        fits ``max_seq_length``; a pair with no room for either answer, or whose answers are
        identical once cut, is dropped."""
        results: list[Encoded | None] = [None] * len(rows)
        pieces: list[tuple[str, bool, bool, int]] = []
        plan: list[tuple[int, list[tuple[str, bool]], list[int]]] = []  # (result, prompt segments, bounds)
        for k, (row, pref) in enumerate(rows):
            try:
                segments, literals, answers = self.preference_segments(pref)
            except RowError as err:
                results[k] = Encoded(row, None, None, err)
                continue
            bounds = [len(pieces)]
            pieces += self.pieces(segments, literals)
            for text, own in answers:
                bounds.append(len(pieces))
                pieces += self.pieces([(text, True)], own, at_start=False)
            bounds.append(len(pieces))
            plan.append((k, segments, bounds))
        ids = self.encode_texts([p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
        for k, segments, (p0, c0, r0, end) in plan:
            row = rows[k][0]
            prompt_ids, _ = self.join_pieces(
                [(text, False) for text, _ in segments], pieces[p0:c0], ids[p0:c0]
            )
            chosen = [t for part in ids[c0:r0] for t in part]
            rejected = [t for part in ids[r0:end] for t in part]
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
