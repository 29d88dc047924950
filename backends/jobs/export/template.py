"""The run's chat template seen from outside TuneDesk: end-of-turn tokens and an Ollama TEMPLATE.

Every rendering goes through ``render_chat`` (one small function over the training renderer,
``backends.data.templates.render``), so the text exported tools produce is the text training saw.

``turn_parts`` reads a template as a *per-message* template: a conversation renders as

    [BOS] [DEFAULT_SYSTEM if the first message is not a system message]
    prefix[role] + content + suffix[role]   (for each message)
    [GENERATION if add_generation_prompt]

It finds the pieces by rendering a few conversations whose contents are unique marker words and
cutting the text at the markers, then checks the reading by rendering other conversations both
ways. ChatML (SmolLM2, Qwen), Llama 3, Gemma, Phi-3 and Mistral-style templates read this way; a
template that does not (one that rewrites earlier turns, say) is a UserInputError for the formats
that need the pieces (Ollama), never a TEMPLATE that differs from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.errors import UserInputError

ROLES = ("system", "user", "assistant")
_MARK = {"system": "TDMARKSYS", "user": "TDMARKUSERA", "user2": "TDMARKUSERB", "assistant": "TDMARKASST"}
# Conversations the reading is checked on: with and without a system prompt, several turns,
# multi-line contents.
CHECK_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "You answer in French.\nAlways."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome.\nC'est Rome."},
        {"role": "user", "content": "And of Spain?"},
    ],
    [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "user", "content": "Three"},
        {"role": "assistant", "content": "Four"},
    ],
]


def render_chat(tokenizer: Any, template: str, messages: list[dict[str, str]], *, generation: bool) -> str:
    """``messages`` rendered with ``template`` exactly as training renders them (the one place this
    module calls the training renderer)."""
    from backends.data.templates import render

    return render(tokenizer, template, messages, add_generation_prompt=generation)


@dataclass(frozen=True)
class TurnParts:
    """The pieces of a per-message chat template (see the module docstring); ``bos`` is the BOS
    text the template itself writes first ("" when it writes none)."""

    bos: str
    default_system: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str

    def render(self, messages: list[dict[str, str]], *, generation: bool) -> str:
        """The text the template renders for ``messages``, from the pieces alone."""
        out = [self.bos]
        if not messages or messages[0]["role"] != "system":
            out.append(self.default_system)
        for m in messages:
            out += [self.prefix[m["role"]], m["content"], self.suffix[m["role"]]]
        if generation and (not messages or messages[-1]["role"] != "assistant"):
            out.append(self.generation)
        return "".join(out)


class TemplateNotPerMessage(UserInputError):
    """The chat template does not render one message at a time (see ``turn_parts``)."""


def _cut(text: str, marks: list[str]) -> list[str]:
    """``text`` = g0 + marks[0] + g1 + marks[1] + ... + gN: returns [g0, ..., gN]."""
    gaps, at = [], 0
    for mark in marks:
        i = text.find(mark, at)
        if i < 0:
            raise ValueError(mark)
        gaps.append(text[at:i])
        at = i + len(mark)
    gaps.append(text[at:])
    return gaps


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """True when the tokenizer puts BOS before a text by itself (as llama.cpp does from the GGUF's
    ``add_bos_token``); a template's own BOS text is then left out of an exported template."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos_id is not None and len(with_special) > len(plain) and with_special[0] == bos_id


def turn_parts(tokenizer: Any, template: str) -> TurnParts:
    """Read ``template`` as a per-message template; raises TemplateNotPerMessage when it is not one
    (the rendering of a check conversation from the pieces differs from the template's own)."""
    s, u1, u2, a = _MARK["system"], _MARK["user"], _MARK["user2"], _MARK["assistant"]

    def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in pairs]

    try:
        four = render_chat(
            tokenizer,
            template,
            msgs(("system", s), ("user", u1), ("assistant", a), ("user", u2)),
            generation=False,
        )
        four_gen = render_chat(
            tokenizer,
            template,
            msgs(("system", s), ("user", u1), ("assistant", a), ("user", u2)),
            generation=True,
        )
        two = render_chat(tokenizer, template, msgs(("user", u1), ("assistant", a)), generation=False)
        one = render_chat(tokenizer, template, msgs(("user", u1)), generation=False)
        t0, t1, t2, t3, t4 = _cut(four, [s, u1, a, u2])
        head_two, _, _ = _cut(two, [u1, a])
        suffix_asst = _cut(two, [u1, a])[2]
        head_one, _ = _cut(one, [u1])
    except Exception as exc:  # a template that raises on these conversations, or drops a marker
        raise TemplateNotPerMessage(
            f"the chat template cannot be read one message at a time ({exc})"
        ) from None
    suffix_user = t4
    ok = (
        four_gen.startswith(four)
        and t2.startswith(suffix_user)
        and t3.startswith(suffix_asst)
        and head_two == head_one
    )
    prefix_user = t3[len(suffix_asst) :] if ok else ""
    ok = ok and t1.endswith(prefix_user) and head_one.endswith(prefix_user)
    bos_token = getattr(tokenizer, "bos_token", None) or ""
    leads = bool(bos_token) and t0.startswith(bos_token) and head_one.startswith(bos_token)
    bos = bos_token if leads and tokenizer_adds_bos(tokenizer) else ""
    if not ok:
        raise TemplateNotPerMessage("the chat template does not render one message at a time")
    parts = TurnParts(
        bos=bos,
        default_system=head_one[len(bos) : len(head_one) - len(prefix_user)],
        prefix={"system": t0[len(bos) :], "user": prefix_user, "assistant": t2[len(suffix_user) :]},
        suffix={"system": t1[: len(t1) - len(prefix_user)], "user": suffix_user, "assistant": suffix_asst},
        generation=four_gen[len(four) :],
    )
    for conv in CHECK_CONVERSATIONS:
        for generation in (False, True):
            if conv[-1]["role"] == "assistant" and generation:
                continue
            want = render_chat(tokenizer, template, conv, generation=generation)
            if parts.render(conv, generation=generation) != want:
                raise TemplateNotPerMessage(
                    "the chat template renders a conversation differently from one message at a time"
                )
    return parts


def end_of_turn_tokens(tokenizer: Any, template: str | None) -> list[str]:
    """The special tokens that end an assistant turn: those the template writes right after an
    assistant message (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), then the tokenizer's EOS.
    Generation must stop at each of them."""
    found: list[str] = []
    if template:
        text = render_chat(
            tokenizer,
            template,
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK["assistant"]}],
            generation=False,
        )
        tail = text[text.rfind(_MARK["assistant"]) + len(_MARK["assistant"]) :]
        specials = sorted(
            {t for t in tokenizer.all_special_tokens if t}
            | set(getattr(tokenizer, "added_tokens_encoder", {}) or {}),
            key=len,
            reverse=True,
        )
        at = 0
        while at < len(tail):
            if tail[at].isspace():
                at += 1
                continue
            hit = next((t for t in specials if tail.startswith(t, at)), None)
            if hit is None:
                break
            if hit not in found:
                found.append(hit)
            at += len(hit)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in found:
        found.append(eos)
    return found


def end_of_turn_ids(tokenizer: Any, template: str | None) -> list[int]:
    """Token ids of ``end_of_turn_tokens`` (each a single token of the vocabulary)."""
    ids = []
    for tok in end_of_turn_tokens(tokenizer, template):
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i >= 0 and i not in ids:
            ids.append(i)
    return ids


def _go_literal(text: str) -> str:
    # "{{" would open an action: write it as a Go string constant instead.
    return text.replace("{{", '{{ "{{" }}')


def go_template(parts: TurnParts) -> str:
    """An Ollama TEMPLATE (Go ``text/template`` over ``.Messages``) that renders as ``parts``.

    One line of actions with no ``{{-`` trimming, so every piece of literal text (newlines
    included) stays as the chat template wrote it. A leading BOS is left out: llama.cpp adds it
    when tokenising, as the GGUF's ``add_bos_token`` says."""
    lit = _go_literal
    out = ['{{ $last := "" }}{{ range .Messages }}{{ $last = .Role }}{{ end }}']
    if parts.default_system:
        out.append(
            '{{ if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
            + lit(parts.default_system)
            + "{{ end }}"
        )
    out.append("{{ range .Messages }}")
    for i, role in enumerate(ROLES):
        out.append(("{{ if" if i == 0 else "{{ else if") + f' eq .Role "{role}" }}}}')
        out.append(lit(parts.prefix[role]) + "{{ .Content }}" + lit(parts.suffix[role]))
    out.append("{{ end }}{{ end }}")
    out.append('{{ if ne $last "assistant" }}' + lit(parts.generation) + "{{ end }}")
    return "".join(out)
