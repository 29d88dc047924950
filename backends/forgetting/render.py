"""How a probe becomes prompt tokens: exactly as chat renders a user's message.

This is the one place the forgetting check renders prompts, so that it can switch to the project's
single prompt renderer in one line when that lands. Today it calls chat's own rendering
(``backends.chat.session.render_prompt``: ``apply_chat_template`` with ``add_generation_prompt``)
with the template chat would use for the adapter (``probe_template``).
"""

from __future__ import annotations

from typing import Any

from backends.data.templates import CHATML_TEMPLATE, model_template
from backends.errors import UserInputError


def probe_template(tokenizer: Any, stored: str | None, choice: str | None = None) -> str:
    """The chat template of the tuned model's replies, as chat picks it: the template stored with
    the adapter (``stored``), else ChatML when the run chose it (``choice``), else the model's own.
    Raises UserInputError when there is none."""
    if stored:
        return stored
    if choice == "chatml":
        return CHATML_TEMPLATE
    own = model_template(tokenizer)
    if own:
        return own
    raise UserInputError(
        "this model has no chat template, so the probes cannot be rendered as chat renders them",
        field="data.chat_template",
    )


def render_probe(tokenizer: Any, messages: list[dict[str, str]], template: str) -> list[int]:
    """Token ids of ``messages`` plus the assistant header, as chat feeds them to the model."""
    from backends.chat.session import render_prompt

    return render_prompt(tokenizer, messages, template)
