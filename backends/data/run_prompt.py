"""What a run recorded for the prompt renderer, and a renderer built from it.

``spec_from_config(config, tokenizer)``: the ``RenderSpec`` a training run with that config uses
(written to the run folder's ``prompt.json`` and the adapter's ``tunedesk.json`` by
``backends.jobs.train.record_prompt_spec`` / the loop). ``spec_for_run(path)``: read it back for a
run folder, its ``adapter/``, a checkpoint or a loose adapter folder. ``renderer_for_run(path,
tokenizer)``: the ``PromptRenderer`` chat, the forgetting check, export and serve use for that
run's adapter (see ``backends.data.render`` for the renderer itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends.data.render import PromptRenderer, RenderSpec
from backends.data.templates import CHATML_TEMPLATE, resolve_chat_template

PROMPT_FILE = "prompt.json"  # in the run folder: RenderSpec.to_dict()

META_FILE = "tunedesk.json"  # next to an adapter; its "prompt" key is RenderSpec.to_dict()
TEMPLATE_FILE = "chat_template.jinja"


def spec_from_config(config: Any, tokenizer: Any) -> RenderSpec:
    """The spec a training run with ``config`` (a RunConfig) renders with: its template choice
    resolved against ``tokenizer`` (``resolve_chat_template``; text-only data on a model without a
    template gets None), ``data.system_prompt``, the tokenizer's BOS rule made explicit, and
    ``data.literal_special_tokens``."""
    data = config.data
    try:
        template = resolve_chat_template(tokenizer, data.chat_template)
    except Exception:  # no model template: only plain text data can train; it needs none
        template = None
    spec = RenderSpec(
        template,
        template_choice=data.chat_template,
        system_prompt=data.system_prompt or None,
        special_tokens=getattr(data, "literal_special_tokens", "text"),
    )
    return RenderSpec(**{**spec.to_dict(), "add_bos": PromptRenderer(tokenizer, spec).adds_bos})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def spec_for_run(path: str | Path) -> RenderSpec | None:
    """The ``RenderSpec`` recorded for a run folder, its ``adapter/``, one of its checkpoints, or a
    loose adapter folder (a weights file counts as its folder); None when nothing is recorded.

    Order: the adapter's ``tunedesk.json`` ``"prompt"``; the run folder's ``prompt.json``; for runs
    from before either existed, the run's ``config.yaml`` (system prompt, template choice, the
    adapter's ``chat_template.jinja``; literal special tokens as control tokens, as those runs
    trained them; BOS by the tokenizer's rule, as they did)."""
    import yaml

    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    template_file = p / TEMPLATE_FILE
    stored_template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
    meta = _read_json(p / META_FILE) or {}
    if isinstance(meta.get("prompt"), dict):
        spec = RenderSpec.from_dict(meta["prompt"])
        if spec.template is None and stored_template is not None:
            spec = RenderSpec(**{**spec.to_dict(), "template": stored_template})
        return spec
    runs = [q for q in (p, p.parent, p.parent.parent) if (q / "config.yaml").is_file()]
    for run in runs:
        raw = _read_json(run / PROMPT_FILE)
        if raw is not None:
            return RenderSpec.from_dict(raw)
    for run in runs:
        try:
            config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        data = config.get("data") or {}
        choice = data.get("chat_template") or "model"
        template = stored_template or (CHATML_TEMPLATE if choice == "chatml" else None)
        return RenderSpec(
            template,
            template_choice=choice,
            system_prompt=data.get("system_prompt") or None,
            special_tokens="control",
        )
    return None


def renderer_for_run(path: str | Path | None, tokenizer: Any) -> PromptRenderer:
    """The renderer for prompts to a model with the adapter at ``path`` (run folder, adapter or
    checkpoint folder; None: the base model alone): the run's recorded spec, with the tokenizer's
    own template where the spec names none. Raises UserInputError when neither has a template."""
    spec = (spec_for_run(path) if path is not None else None) or RenderSpec(None)
    if spec.template is None:
        spec = RenderSpec(**{**spec.to_dict(), "template": resolve_chat_template(tokenizer, "model")})
    return PromptRenderer(tokenizer, spec)
