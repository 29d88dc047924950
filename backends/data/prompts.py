"""GRPO prompt batches: the prompts of a micro-batch and their reference answers (the engine
samples the completions). Order as ``make_batches``: a pure function of (examples, seed, epoch),
so a resumed run rebuilds the same list."""

from __future__ import annotations

from backends.data.batching import _pad_rows, _rng, check_batch_request
from backends.data.types import IGNORE_INDEX, PromptBatch, PromptExample


def make_prompt_batches(
    examples: list[PromptExample],
    *,
    batch_size: int,
    pad_token_id: int,
    seed: int,
    epoch: int,
    packing: bool = False,
    max_seq_length: int | None = None,
) -> list[PromptBatch]:
    """One epoch of GRPO micro-batches of ``batch_size`` prompts in a seeded random order (same
    keywords as ``make_batches``). Raises ValueError for an empty list, a batch size below 1, or
    ``packing``."""
    check_batch_request(examples, batch_size, packing, unpacked=("prompts", "GRPO"))
    order = _rng(seed, epoch).permutation(len(examples))
    out = []
    for start in range(0, len(order), batch_size):
        members = [examples[i] for i in order[start : start + batch_size]]
        rows = [
            (e.prompt_ids, [IGNORE_INDEX] * len(e.prompt_ids), list(range(len(e.prompt_ids))), None)
            for e in members
        ]
        b = _pad_rows(rows, pad_token_id, [e.row for e in members])
        b.num_label_tokens = len(members)  # the loop weights a validation batch by its prompts
        out.append(
            PromptBatch(
                **vars(b),
                prompts=[list(e.prompt_ids) for e in members],
                answers=[list(e.answer_ids) for e in members],
            )
        )
    return out
