"""``tunedesk forgetting RUN_DIR [--json]``: the forgetting check of a finished (or stopped) run.

Loads the run's base model once on PyTorch with its adapter beside it (peft, not merged; an MLX
adapter is converted exactly first), runs the full check (``probes.FULL``: every probe, answers
of up to 48 tokens, the whole general text) or the quick one (``--quick``), writes
``forgetting.json`` into the run folder and appends the ``forgetting`` event to its
``events.jsonl``. Prints a short report, or with ``--json`` the event as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from backends.errors import EXIT_OK, UserInputError
from backends.forgetting.check import eos_ids, label_answers, prepare, record
from backends.forgetting.probes import FULL, QUICK
from backends.forgetting.render import run_renderer
from backends.forgetting.score import ForgettingResult
from backends.runs import RunDir, run_status


def check_run(
    run_dir: str | Path,
    *,
    quick: bool = False,
    probes: int | None = None,
    max_new_tokens: int | None = None,
    say: Any = None,
) -> tuple[ForgettingResult, dict[str, Any]]:
    """Run the check on ``run_dir``'s adapter and record it; returns (result, event).

    Raises UserInputError naming the folder when it is no run folder, the run is still running,
    or it has no adapter or checkpoint yet."""
    from backends.chat.adapters import check_base_model, read_adapter
    from backends.chat.loader import convert_for, resolve_chat_model

    run = RunDir(Path(run_dir).expanduser())
    config = run.load_config()
    if run_status(run) == "running":
        raise UserInputError("this run is still training; check it when it has finished", file=run.path)
    info = read_adapter(run.path)
    model_dir, model_name = resolve_chat_model(None, info)
    check_base_model(info, model_dir, model_name)
    # The run and its adapter are fine: only now load the ML stack (a wrong folder fails fast).
    import torch
    from peft import PeftModel

    from backends.data.templates import load_tokenizer
    from backends.forgetting.torch_check import run_check
    from backends.torch_backend.device import pick_device
    from backends.torch_backend.loading import load_causal_lm

    info = convert_for(info, "torch")
    size = QUICK if quick else FULL
    if max_new_tokens:
        size = replace(size, max_new_tokens=max_new_tokens)
    tokenizer = load_tokenizer(model_dir)
    inputs = prepare(tokenizer, run_renderer(tokenizer, run.path), size, probes)
    batch = len(inputs.prompts) if quick else 8
    device = pick_device()
    if say:
        say(f"loading {model_name} with the adapter {info.path} on {device}")
    base = load_causal_lm(model_dir, torch.float32)
    model = PeftModel.from_pretrained(base.to(device), str(info.path)).eval()
    if say:
        say(f"checking {len(inputs.prompts)} probes and {len(inputs.text_ids)} tokens of general text")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = run_check(
        model,
        inputs.prompts,
        inputs.text_ids,
        max_new_tokens=size.max_new_tokens,
        eos=eos_ids(tokenizer, getattr(base, "generation_config", None)),
        pad=int(pad or 0),
        device=device,
        size=size.name,
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip(),
        batch=batch,
    )
    label_answers(result, inputs)
    event = record(run, result, config=config)
    return result, event


def format_report(event: dict[str, Any]) -> str:
    """The check's figures in words, for the terminal."""
    lines = [
        f"drift score {event['score']:.3f} nats/token: {event['verdict']} change of general ability",
        f"  KL(base || tuned) on the base model's answers: {event['kl_mean']:.4f} nats/token "
        f"({event['tokens']} tokens)",
        f"  perplexity of general text: {event['ppl_base']:.2f} before, {event['ppl_tuned']:.2f} after",
        f"  probe answers changed: {event['answers_changed']} of {event['probes']}",
        f"  ({event['size']} check, {event['elapsed']:.1f} s)",
    ]
    for tip in event.get("advice") or []:
        lines.append(f"suggestion: {tip}")
    return "\n".join(lines)


def cli_forgetting(args: argparse.Namespace) -> int:
    """``tunedesk forgetting RUN_DIR [--quick] [--probes N] [--max-new-tokens N] [--json]``."""
    import sys

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    _, event = check_run(
        args.run_dir, quick=args.quick, probes=args.probes, max_new_tokens=args.max_new_tokens, say=say
    )
    print(json.dumps(event, ensure_ascii=False) if args.json else format_report(event))
    return EXIT_OK
