"""How a probe becomes prompt tokens: exactly as chat renders a user's message to the tuned model.

Both go through the project's one prompt renderer (``backends.data.render.PromptRenderer``) with
the run's recorded spec (its chat template, system prompt, BOS rule): ``run_renderer`` for a run
folder (what chat uses, ``renderer_for_run``), ``spec_renderer`` for a run being trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.data.render import PromptRenderer, RenderSpec
from backends.data.run_prompt import renderer_for_run


def run_renderer(tokenizer: Any, run_path: str | Path | None) -> PromptRenderer:
    """The renderer chat uses for the adapter of ``run_path`` (None: the base model alone).
    Raises UserInputError when neither the run nor the model has a chat template."""
    return renderer_for_run(run_path, tokenizer)


def spec_renderer(tokenizer: Any, spec: RenderSpec | None) -> PromptRenderer | None:
    """The renderer of a run being trained (``PreparedData.render_spec``); None without a template
    (plain-text data on a model that has none: there is no chat format to probe)."""
    if spec is None or spec.template is None:
        return None
    return PromptRenderer(tokenizer, spec)


def render_probe(renderer: PromptRenderer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` plus the assistant header, as chat feeds them to the model."""
    return list(renderer.render_chat(messages, add_generation_prompt=True).input_ids)
