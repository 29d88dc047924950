"""The framework-neutral parts of the forgetting check: its inputs, and where its result goes.

``prepare`` renders the probes (``backends.forgetting.render``) and tokenises the general text;
a backend's check (PyTorch: ``backends.forgetting.torch_check.run_check``) computes the figures;
``record`` writes ``forgetting.json`` into the run folder (atomically) and emits the
``forgetting`` event. ``read_forgetting`` is the light reader the desktop app uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.events import EventSink
from backends.forgetting.probes import CheckSize, Probe, general_text, load_probes, select_probes
from backends.forgetting.render import render_probe
from backends.forgetting.score import ForgettingResult, advice
from backends.runs import RunDir, atomic_write_text

RESULT_FILE = "forgetting.json"
EVENT_FIELDS = ("kl_mean", "ppl_base", "ppl_tuned", "answers_changed", "score", "verdict")


@dataclass
class CheckInputs:
    """The rendered probes (``prompts``: token ids, one list per probe), the general text's
    ``text_ids`` and the check ``size`` they were made for."""

    probes: list[Probe]
    prompts: list[list[int]]
    text_ids: list[int]
    size: CheckSize

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def prepare(tokenizer: Any, renderer: Any, size: CheckSize, probes: int | None = None) -> CheckInputs:
    """The probes of ``size`` (or ``probes`` of them) rendered by ``renderer`` (a
    ``PromptRenderer``, ``backends.forgetting.render``) as chat renders them, and the first
    ``size.text_tokens`` tokens of the general text (no special tokens)."""
    chosen = select_probes(load_probes(), probes if probes is not None else size.probes)
    prompts = [render_probe(renderer, p.messages) for p in chosen]
    text_ids = list(tokenizer(general_text(), add_special_tokens=False)["input_ids"])
    if size.text_tokens:
        text_ids = text_ids[: size.text_tokens]
    return CheckInputs(chosen, prompts, text_ids, size)


def eos_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Ids that end an answer: the tokenizer's EOS and the model's generation config's."""
    ids: set[int] = set()
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def label_answers(result: ForgettingResult, inputs: CheckInputs) -> ForgettingResult:
    """Add each probe's id, category and prompt to the result's answer texts."""
    for probe, answer in zip(inputs.probes, result.answers, strict=False):
        answer.update({"id": probe.id, "category": probe.category, "prompt": probe.prompt})
    return result


def record(
    run: RunDir, result: ForgettingResult, sink: EventSink | None = None, config: Any = None
) -> dict[str, Any]:
    """Write ``forgetting.json`` (every figure, the answers, and advice when the drift is large)
    atomically into the run folder and emit the ``forgetting`` event (to ``sink``, else appended to
    the run's ``events.jsonl``). Returns the event."""
    fields = result.fields(with_answers=False)
    fields["advice"] = advice(result.verdict, config)
    atomic_write_text(
        run.path / RESULT_FILE, json.dumps({**fields, "answers": result.answers}, indent=1) + "\n"
    )
    if sink is not None:
        return sink.emit("forgetting", **fields)
    with EventSink(run.events_path) as own:
        return own.emit("forgetting", **fields)


def read_forgetting(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``forgetting.json`` (None when the check has not run or the file is broken)."""
    try:
        data = json.loads((Path(run_dir) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and all(k in data for k in EVENT_FIELDS) else None
