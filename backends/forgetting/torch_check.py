"""The forgetting check on PyTorch: one loaded peft model, its adapter switched off and on.

For each probe (already rendered to prompt ids): the base model's greedy answer (adapter off),
batched with left padding through transformers' ``generate``; then the sequence prompt + base answer is teacher-forced once with the adapter off and once with it on, and
at every answer position the KL divergence KL(p_base || p_tuned) = sum_v p_base(v) (log p_base(v) -
log p_tuned(v)) over the whole vocabulary is summed; ``kl_mean`` is that sum over all answer tokens
divided by their number. The general text is cut into windows of ``WINDOW`` tokens; its perplexity
is exp(mean negative log-likelihood per predicted token), with the adapter off and on.

Both sides run the same functions on the same batches; ``tuned=False`` runs the "tuned" side with
the adapter off too, which gives exactly KL 0 and equal perplexities (the test of the method).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from backends.forgetting.score import ForgettingResult

WINDOW = 256  # tokens per perplexity window
BATCH = 8  # probes per forward


def adapter_state(model: Any, on: bool) -> contextlib.AbstractContextManager:
    """The adapter as is (``on``) or switched off (peft's ``disable_adapter()`` context)."""
    return contextlib.nullcontext() if on else model.disable_adapter()


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _trim(ids: list[int], eos: set[int]) -> list[int]:
    """Generated ids up to and including the first end-of-turn id."""
    out = []
    for tok in ids:
        out.append(tok)
        if tok in eos:
            break
    return out


def greedy_answers(
    model: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    eos: set[int],
    pad: int,
    device: str,
    batch: int = BATCH,
) -> list[list[int]]:
    """Greedy answers (token ids, ending at the first end-of-turn id) of ``prompts``, in batches of
    ``batch`` left-padded prompts, with the adapter in whatever state the caller set."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        eos_token_id=sorted(eos),
        use_cache=True,
    )
    out: list[list[int]] = []
    for chunk in _chunks(prompts, batch):
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row in generated[:, width:].tolist():
            out.append(_trim(row, eos))
    return out


def _answer_log_probs(
    model: Any, prompts: list[list[int]], answers: list[list[int]], pad: int, device: str
) -> list[torch.Tensor]:
    """Per probe, the log-softmax (fp32, [len(answer), V]) at the positions that predict its answer
    tokens: one teacher-forced forward of prompt + answer (right-padded batch)."""
    seqs = [p + a for p, a in zip(prompts, answers, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return [
        F.log_softmax(logits[i, len(p) - 1 : len(p) - 1 + len(a)].float(), dim=-1)
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
    ]


def _text_nll(model: Any, text_ids: list[int], device: str) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, predicted tokens) of ``text_ids`` in windows."""
    total, count = 0.0, 0
    for window in _chunks(text_ids, WINDOW):
        if len(window) < 2:
            continue
        ids = torch.tensor([window], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        total += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += len(window) - 1
    return total, count


def run_check(
    model: Any,
    prompts: list[list[int]],
    text_ids: list[int],
    *,
    max_new_tokens: int,
    eos: set[int],
    pad: int,
    device: str,
    size: str = "full",
    decode: Callable[[list[int]], str] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    tuned: bool = True,
    batch: int = BATCH,
) -> ForgettingResult:
    """The check on a peft model (see the module docstring). ``prompts``: rendered probe ids;
    ``text_ids``: the general text's ids; ``decode``: ids -> text for the answers listed in the
    result (omitted: no texts); ``autocast``: a context for the forward passes (training precision);
    ``tuned``: False runs the tuned side with the adapter off (KL exactly 0); ``batch``: probes per
    forward. ``answers_changed`` counts probes where, along the base answer, the tuned model's argmax
    differs from the base model's at some position, i.e. whose tuned greedy answer leaves the base
    one (so no second generation is needed); with ``decode`` the tuned answers are also generated,
    for display. The model is put in eval mode for the check and back in its former mode after.
    Raises ValueError for an empty probe list or text."""
    if not prompts or len(text_ids) < 2:
        raise ValueError("the check needs at least one probe and two text tokens")
    start = time.monotonic()
    was_training = model.training
    model.eval()
    cast = autocast or contextlib.nullcontext
    answers = functools.partial(
        greedy_answers,
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        eos=eos,
        pad=pad,
        device=device,
        batch=batch,
    )
    try:
        with torch.no_grad(), cast():
            with adapter_state(model, False):
                base_answers = answers()
            tuned_answers: list[list[int]] = []
            if decode is not None:
                with adapter_state(model, tuned):
                    tuned_answers = answers()
            kl_sum, tokens, changed = 0.0, 0, 0
            pairs = [(p, a) for p, a in zip(prompts, base_answers, strict=True) if a]
            for chunk in _chunks(pairs, batch):
                ps, ans = [p for p, _ in chunk], [a for _, a in chunk]
                with adapter_state(model, False):
                    lp_base = _answer_log_probs(model, ps, ans, pad, device)
                with adapter_state(model, tuned):
                    lp_tuned = _answer_log_probs(model, ps, ans, pad, device)
                for lb, lt in zip(lp_base, lp_tuned, strict=True):
                    kl_sum += float((lb.exp() * (lb - lt)).sum())
                    tokens += lb.shape[0]
                    # The tuned greedy answer follows the base one until their argmaxes first differ.
                    changed += int(bool((lt.argmax(-1) != lb.argmax(-1)).any()))
            with adapter_state(model, False):
                nll_base, count = _text_nll(model, text_ids, device)
            with adapter_state(model, tuned):
                nll_tuned, _ = _text_nll(model, text_ids, device)
    finally:
        model.train(was_training)
    answers = []
    if decode is not None:
        answers = [
            {"base": decode(b), "tuned": decode(t)} for b, t in zip(base_answers, tuned_answers, strict=True)
        ]
    return ForgettingResult(
        kl_mean=kl_sum / tokens if tokens else 0.0,
        ppl_base=math.exp(nll_base / count),
        ppl_tuned=math.exp(nll_tuned / count),
        answers_changed=changed,
        probes=len(prompts),
        tokens=tokens,
        size=size,
        elapsed=round(time.monotonic() - start, 3),
        answers=answers,
    )
