"""Unpaired feedback (KTO): tokenising validated ``Feedback`` rows and batching them.

A row is a prompt and one rated answer (``label`` true: desirable, false: undesirable). The prompt
is rendered with the generation prompt and the answer is the assistant turn's text, exactly as a
preference pair's answers (``Encoder.encode_preference``), so DPO, ORPO and KTO see the same tokens
for the same conversation. Batches (``make_kto_batches``) hold each example's prompt + answer and,
for KTO's KL estimate, the same prompts with the batch's answers rotated by one (as TRL's
KTOTrainer: (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1})).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backends.data.batching import _pad_rows, _rng, check_batch_request, length_groups
from backends.data.encode import Encoded, Encoder
from backends.data.formats import Feedback, Preference, RowError
from backends.data.types import IGNORE_INDEX, KTOBatch, KTOExample


def encode_feedback(encoder: Encoder, rows: Sequence[tuple[int, Feedback]]) -> list[Encoded]:
    """Tokenise feedback rows as ``Encoder.encode_preference`` tokenises a pair's prompt and one
    answer (ending with the end-of-turn token), cut so both fit ``max_seq_length``; a row whose
    prompt leaves no room is dropped."""
    results: list[Encoded | None] = [None] * len(rows)
    pieces: list = []
    plan: list[tuple[int, list[tuple[str, bool]], list[int]]] = []
    for k, (row, fb) in enumerate(rows):
        try:
            segments, literals, answers = encoder.preference_segments(
                Preference(fb.prompt, fb.completion, fb.completion)
            )
        except RowError as err:
            results[k] = Encoded(row, None, None, err)
            continue
        text, own = answers[0]
        bounds = [len(pieces)]
        pieces += encoder.pieces(segments, literals)
        bounds.append(len(pieces))
        pieces += encoder.pieces([(text, True)], own, at_start=False)
        bounds.append(len(pieces))
        plan.append((k, segments, bounds))
    ids = encoder.encode_texts([p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
    for k, segments, (p0, a0, end) in plan:
        row, fb = rows[k]
        prompt_ids, _ = encoder.join_pieces(
            [(text, False) for text, _ in segments], pieces[p0:a0], ids[p0:a0]
        )
        answer = [t for part in ids[a0:end] for t in part]
        length = len(prompt_ids) + len(answer)
        room = encoder.max_seq_length - len(prompt_ids)
        if room < 1:
            err = RowError(
                "(length)",
                f"the prompt alone has {len(prompt_ids)} tokens, no room for an answer within "
                f"max_seq_length {encoder.max_seq_length}; dropped",
            )
            results[k] = Encoded(row, None, length, err)
            continue
        results[k] = Encoded(row, KTOExample(prompt_ids, answer[:room], fb.desirable, row), length)
    return results  # type: ignore[return-value]


def make_kto_batches(
    examples: list[KTOExample],
    *,
    batch_size: int,
    pad_token_id: int,
    seed: int,
    epoch: int,
    packing: bool = False,
    max_seq_length: int | None = None,
) -> list[KTOBatch]:
    """One epoch of KTO micro-batches, deterministic for (examples, seed, epoch), length-grouped as
    ``make_preference_batches`` (same keywords). Each holds B examples as 2B rows (see
    ``KTOBatch``); a mismatched row's answer is cut to fit ``max_seq_length`` with its prompt.
    Raises ValueError for an empty list, a batch size below 1, or ``packing``."""
    check_batch_request(examples, batch_size, packing, unpacked=("feedback rows", "KTO"))
    rng = _rng(seed, epoch)
    lengths = np.array([len(e.prompt_ids) + len(e.completion_ids) for e in examples])
    order = rng.permutation(len(examples))
    groups = length_groups(lengths, order, rng, batch_size)
    out = []
    for group in groups:
        members = [examples[i] for i in group]
        rotated = [members[-1], *members[:-1]]
        rows = []
        for e, answer_of in [*zip(members, members, strict=True), *zip(members, rotated, strict=True)]:
            answer = answer_of.completion_ids
            if max_seq_length is not None:
                answer = answer[: max(1, max_seq_length - len(e.prompt_ids))]
            ids = e.prompt_ids + answer
            rows.append((ids, [IGNORE_INDEX] * len(e.prompt_ids) + answer, list(range(len(ids))), None))
        b = _pad_rows(rows, pad_token_id, [e.row for e in members] * 2)
        n = len(members)
        b.num_tokens = int(b.attention_mask[:n].sum())
        out.append(
            KTOBatch(**vars(b), num_pairs=n, desirable=np.array([e.desirable for e in members], dtype=bool))
        )
    return out
