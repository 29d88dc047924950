"""The tokenizer and the chat template a run trains with (and chat later uses, byte for byte).

The template is the model's own (``tokenizer.chat_template``), or, when ``data.chat_template`` is
``chatml``, the ChatML template (``backends.data.chatml``). A model without a template never gets a guessed one: it is
an error that names the ``chatml`` option. Rendering goes through transformers'
``render_jinja_template`` with the tokenizer's special tokens as variables, exactly as
``tokenizer.apply_chat_template`` does, so training and chat see the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.data.chatml import CHATML_TEMPLATE  # noqa: F401 (re-exported: the data floor's name)
from backends.errors import UserInputError


def load_tokenizer(model_dir: str | Path) -> Any:
    """The model's tokenizer (``AutoTokenizer``, local files only, ``trust_remote_code=False``).

    Raises UserInputError naming the folder when it holds no loadable tokenizer.
    """
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserInputError(f"cannot load the tokenizer: {exc}", file=model_dir) from None


def _choice(config_or_choice: Any) -> str:
    if isinstance(config_or_choice, str):
        return config_or_choice
    data = getattr(config_or_choice, "data", config_or_choice)
    return getattr(data, "chat_template", "model")


def model_template(tokenizer: Any) -> str | None:
    """The tokenizer's own chat template (the ``default`` one of several named ones), or None."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def resolve_chat_template(tokenizer: Any, config_or_choice: Any) -> str:
    """The Jinja chat template to train with.

    ``config_or_choice``: a RunConfig, a DataConfig, or the choice itself ('model' | 'chatml').
    Returns the model's template for 'model', ``CHATML_TEMPLATE`` for 'chatml'.
    Raises UserInputError for 'model' when the tokenizer has no template (offering
    ``data.chat_template: chatml``), and for an unknown choice.
    """
    choice = _choice(config_or_choice)
    if choice == "chatml":
        return CHATML_TEMPLATE
    if choice != "model":
        raise UserInputError(
            f"unknown chat template {choice!r}; use 'model' or 'chatml'", field="data.chat_template"
        )
    template = model_template(tokenizer)
    if template is None:
        raise UserInputError(
            "this model has no chat template, so its chat format would be a guess",
            field="data.chat_template",
            hint="set `data.chat_template: chatml` to train with the ChatML format, or use plain `text` data",
        )
    return template


def render(
    tokenizer: Any,
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict] | None = None,
) -> str:
    """Render one conversation with ``template`` as ``tokenizer.apply_chat_template(tokenize=False)``
    would (the tokenizer's special tokens are template variables; ``tools``: JSON schemas for
    templates that list tools). Raises whatever the template raises (jinja2's TemplateError for
    ``raise_exception``). Callers tokenise through ``backends.data.render.PromptRenderer``."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages],
        tools=tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **tokenizer.special_tokens_map,
    )
    return rendered[0]
