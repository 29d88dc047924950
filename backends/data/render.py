"""The one prompt renderer: a conversation (+ tools, + system prompt) -> text, token ids, trained mask.

Training (``backends.data.encode.Encoder`` builds on this class), validation, chat on both
backends, and every later consumer (forgetting check, export, serve) render prompts here, so the
ids a tuned model is fed at chat time are exactly the ids it was trained on.

Public API (stable; other modules build on it):

- ``RenderSpec(template, template_choice="model", system_prompt=None, add_bos=None,
  special_tokens="text")``: everything the renderer needs besides the tokenizer. ``add_bos``:
  put the tokenizer's BOS first (exactly once) - None means "when the tokenizer itself adds one".
  ``special_tokens``: how special-token strings typed inside a message (a literal
  ``<|im_end|>``) are tokenised: ``"text"`` (default: as ordinary text, never as control
  tokens) or ``"control"`` (opt-in: as the control tokens). ``to_dict()`` / ``from_dict()``.
- ``PromptRenderer(tokenizer, spec, *, train_on="completion")`` and its
  ``render_chat(messages, *, tools=None, add_generation_prompt=False) -> RenderedPrompt``.
- ``RenderedPrompt(text, input_ids, labels)``: ``text`` is the exact rendered text (special tokens
  visible, BOS included when added); ``input_ids`` [T]; ``labels`` [T], the token id where it is
  trained and ``IGNORE_INDEX`` (-100) elsewhere (``mask`` gives it as booleans). Nothing is cut.
- In ``backends.data.run_prompt``: ``spec_for_run(path) -> RenderSpec | None``: the spec a run recorded (``prompt.json`` in the run
  folder; ``"prompt"`` in an adapter's ``tunedesk.json``), for a run folder, its ``adapter/`` or a
  checkpoint; runs from before the record fall back to their ``config.yaml``.
- ``backends.data.run_prompt.renderer_for_run(path, tokenizer) -> PromptRenderer`` (the tokenizer's own template and BOS
  rule when the folder records nothing); ``load_tokenizer(model_dir)`` is the one tokenizer loader
  (``backends.data.templates``).

How a conversation is cut and tokenised (never by searching marker tokens in token ids):

1. Render the whole conversation with the template (``full``), with the generation prompt when
   asked (chat).
2. For assistant turn i, render the conversation before it with the generation prompt (``P_i``)
   and the conversation up to and including it (``Q_i``). When ``full`` starts with both (true of
   every common template), the turn's text is ``full[len(P_i):len(Q_i)]``: the answer plus
   whatever the template closes the turn with (``<|im_end|>``, ``<|eot_id|>``, ``</s>`` ...).
   Templates that rewrite earlier turns fall back to locating the turn's content after the
   previous turn and extending over the special tokens that follow it.
3. Whitespace after the closing special token (ChatML's ``\\n``) is not trained: it belongs to the
   next prompt, and at chat time generation stops at the special token.

The text is cut at those offsets into alternating untrained / trained segments and each segment
is tokenised on its own, so a chat prompt (the same history plus the generation prompt) is
cut at the same places and gives the same ids as the training prompt, no token straddles a
boundary, and no leading space of an answer merges into the prompt. Segments after the first
are encoded behind a newline that is then removed again, as transformers does for chat pieces,
so SentencePiece tokenizers do not add their start-of-text space mid-conversation. Exactly one
BOS where the rule says so (a template that renders BOS and a tokenizer that adds it do not give
two). Special-token strings inside message content (``special_tokens="text"``) are swapped for
private-use placeholders before rendering and tokenised with ``split_special_tokens=True``
afterwards, so the template's own special tokens stay control tokens and the user's do not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from backends.data.formats import Message, Preference, RowError
from backends.data.templates import (
    load_tokenizer,
    render,
)
from backends.data.toolcalls import call_names, tool_names
from backends.data.types import IGNORE_INDEX

__all__ = ["PromptRenderer", "RenderSpec", "RenderedPrompt", "load_tokenizer", "with_system_prompt"]

SPECIAL_TOKEN_POLICIES = ("text", "control")
# Placeholders for literal special-token strings in content: private-use code points, which no
# tokenizer treats as special and no template rewrites.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_ANSWER_SLOT = "\ue002"  # the answer's place when a chat prompt is rendered as a training row


@dataclass(frozen=True)
class RenderSpec:
    """What the renderer needs besides the tokenizer (see the module docstring)."""

    template: str | None
    template_choice: str = "model"
    system_prompt: str | None = None
    add_bos: bool | None = None
    special_tokens: str = "text"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the run folder's ``prompt.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RenderSpec:
        """The spec from ``to_dict()``'s output; unknown keys are ignored (newer writers)."""
        fields = {k: raw[k] for k in ("template", "template_choice", "system_prompt", "add_bos") if k in raw}
        policy = raw.get("special_tokens", "text")
        return cls(**fields, special_tokens=policy if policy in SPECIAL_TOKEN_POLICIES else "text")


@dataclass
class RenderedPrompt:
    """One rendered conversation: ``text`` (special tokens visible), ``input_ids`` [T] and
    ``labels`` [T] (the id where trained, ``IGNORE_INDEX`` elsewhere)."""

    text: str
    input_ids: list[int]
    labels: list[int]

    @property
    def mask(self) -> list[bool]:
        """True at trained positions."""
        return [x != IGNORE_INDEX for x in self.labels]


def with_system_prompt(messages: list[Message], system_prompt: str | None) -> list[Message]:
    """``system_prompt`` as a first system turn when the conversation has none (else unchanged)."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


class PromptRenderer:
    """Renders and tokenises conversations for one tokenizer and ``RenderSpec``.

    ``train_on``: which segments carry labels: 'completion' (every assistant turn), 'last_turn',
    or 'all' (every token).
    """

    def __init__(
        self, tokenizer: Any, spec: RenderSpec | str | None, *, train_on: str = "completion"
    ) -> None:
        if train_on not in ("completion", "last_turn", "all"):
            raise ValueError(f"train_on must be completion, last_turn or all, not {train_on!r}")
        if not isinstance(spec, RenderSpec):
            spec = RenderSpec(spec)
        if spec.special_tokens not in SPECIAL_TOKEN_POLICIES:
            raise ValueError(f"special_tokens must be text or control, not {spec.special_tokens!r}")
        self.tokenizer = tokenizer
        self.spec = spec
        self.template = spec.template
        self.train_on = train_on
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        tokenizer_adds_bos = (
            self.bos_id is not None and len(with_special) > len(plain) and with_special[0] == self.bos_id
        )
        self.adds_bos = bool(spec.add_bos) if spec.add_bos is not None else tokenizer_adds_bos
        self.adds_bos = self.adds_bos and self.bos_id is not None
        specials = set(getattr(tokenizer, "added_tokens_encoder", {}) or {}) | set(
            tokenizer.all_special_tokens
        )
        # Special-token strings by length, longest first: suffix/prefix tests are set lookups.
        self.special_strings = {s for s in specials if s}
        self.special_lengths = sorted({len(s) for s in self.special_strings}, reverse=True)
        ordered = sorted(self.special_strings, key=len, reverse=True)
        self.special_pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
        self.newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
        after_newline = tokenizer("\na", add_special_tokens=False)["input_ids"]
        # SentencePiece-style tokenizers add a space at the start of every encoded string; encoding
        # a mid-conversation segment behind a newline (then removing it) avoids that.
        self.mid_text_trick = after_newline[: len(self.newline_ids)] == self.newline_ids and (
            after_newline[len(self.newline_ids) :] != plain
        )
        self.turns_without_stop = 0  # assistant turns that end with no special token (notice)

    # ---- the public call ---------------------------------------------------------------------

    def render_chat(
        self,
        messages: list[Message],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = False,
    ) -> RenderedPrompt:
        """Render and tokenise one conversation (the spec's system prompt added when it has none).

        ``add_generation_prompt``: end with the assistant header (chat; the conversation then ends
        with a user turn); else the conversation is a training row ending with an assistant turn.
        Raises RowError when the template cannot render it or an assistant turn cannot be located.
        """
        segments, literals = self.chat_segments(
            messages, tools=tools, add_generation_prompt=add_generation_prompt
        )
        ids, labels = self.tokenize_segments(segments, literals)
        text = self.restore_literals("".join(s for s, _ in segments), literals)
        if (
            ids[:1] == [self.bos_id]
            and self.bos_id is not None
            and not text.startswith(self.tokenizer.bos_token)
        ):
            text = self.tokenizer.bos_token + text
        return RenderedPrompt(text, ids, labels)

    # ---- rendering -------------------------------------------------------------------------

    def escape_literals(self, messages: list[Message]) -> tuple[list[Message], list[str]]:
        """``messages`` with every special-token string in their content replaced by a placeholder
        (policy ``text``), and the replaced strings in order; unchanged under ``control``."""
        literals: list[str] = []
        if self.spec.special_tokens == "control" or self.special_pattern is None:
            return list(messages), literals

        def swap(match: re.Match) -> str:
            literals.append(match.group(0))
            return f"{_OPEN}{len(literals) - 1}{_CLOSE}"

        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str) and self.special_pattern.search(content):
                m = {**m, "content": self.special_pattern.sub(swap, content)}
            out.append(m)
        return out, literals

    def literal_specials(self, messages: list[Message]) -> list[str]:
        """The special-token strings written inside the messages' content, in order."""
        if self.special_pattern is None:
            return []
        return [
            s
            for m in messages
            if isinstance(m.get("content"), str)
            for s in self.special_pattern.findall(m["content"])
        ]

    @staticmethod
    def restore_literals(text: str, literals: Sequence[str]) -> str:
        """Undo ``escape_literals`` in rendered text."""
        return _PLACEHOLDER.sub(lambda m: literals[int(m.group(1))], text) if literals else text

    def _render(
        self, messages: list[Message], add_generation_prompt: bool = False, tools: list[dict] | None = None
    ) -> str:
        try:
            return render(
                self.tokenizer,
                self.template,
                messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
            )
        except Exception as exc:  # a template's raise_exception or a type error inside it
            raise RowError("(row)", f"the chat template cannot render this row: {exc}") from None

    def _ends_with_special(self, text: str) -> bool:
        return any(text[-n:] in self.special_strings for n in self.special_lengths if n <= len(text))

    def _special_at(self, text: str, at: int) -> int:
        """Length of the (longest) special-token string starting at ``text[at]``, else 0."""
        return next((n for n in self.special_lengths if text[at : at + n] in self.special_strings), 0)

    def _extend_over_specials(self, full: str, end: int) -> int:
        while True:
            gap = len(full) - end - len(full[end:].lstrip(" "))
            n = self._special_at(full, end + gap)
            if n == 0:
                return end
            end += gap + n

    def _turn_span(
        self,
        full: str,
        before: list[Message],
        through: list[Message] | None,
        content: str,
        cursor: int,
        tools: list[dict] | None = None,
    ) -> tuple[int, int]:
        """Character span [start, end) in ``full`` of the assistant turn that follows ``before``.

        ``through``: the conversation up to and including that turn, or None when it is all of
        ``full``. Raises RowError when the turn cannot be located.
        """
        prompt = self._render(before, add_generation_prompt=True, tools=tools)
        upto = full if through is None else self._render(through, tools=tools)
        if full.startswith(prompt) and full.startswith(upto) and cursor <= len(prompt) < len(upto):
            start, end = len(prompt), len(upto)
        else:
            # Search after the previous turn and after where the prompt and the full rendering
            # part (so an answer that also occurs in the prompt is not matched there).
            shared = len(os.path.commonprefix([prompt, full]))
            start = full.find(content, max(cursor, shared))
            if start < 0:
                start = full.find(content, cursor)
            if start < 0:
                raise RowError(
                    "(row)", "the chat template changes the assistant's text, so its span cannot be found"
                )
            end = self._extend_over_specials(full, start + len(content))
        text = full[start:end]
        stripped = text.rstrip()
        if len(stripped) < len(text) and self._ends_with_special(stripped):
            end = start + len(stripped)
        if not self._ends_with_special(full[start:end]):
            self.turns_without_stop += 1
        return start, end

    def chat_segments(
        self,
        messages: list[Message],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = False,
    ) -> tuple[list[tuple[str, bool]], list[str]]:
        """The rendered conversation (system prompt added, literals escaped) cut into (text,
        trained) segments, in order, and the escaped literals. Raises RowError.

        With ``add_generation_prompt`` (chat) the conversation is rendered as training renders a
        row: with an answer slot appended as the last assistant turn, cut where that turn starts.
        So the prompt is the training prompt also for templates that render a conversation
        differently when it ends with a user turn (e.g. a system prompt or tools placed before
        the last user turn only)."""
        messages, literals = self.escape_literals(with_system_prompt(messages, self.spec.system_prompt))
        if add_generation_prompt:
            messages = [*messages, {"role": "assistant", "content": _ANSWER_SLOT}]
        full = self._render(messages, False, tools)
        names = tool_names(tools)
        if names and not add_generation_prompt and not any(n in full for n in names):
            raise RowError(
                "tools",
                "the chat template has no tools section (none of the row's tools appears in the "
                "rendered text): train tool-calling data on a model whose template lists tools",
            )
        spans: list[tuple[int, int]] = []
        cursor = 0
        last = len(messages) - 1
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            through = None if i == last else messages[: i + 1]
            names = call_names(m)
            anchor = m["content"] or (names[0] if names else "")
            start, end = self._turn_span(full, messages[:i], through, anchor, cursor, tools)
            missing = [n for n in names if n not in full[start:end]]
            if missing:
                raise RowError(
                    "(row)",
                    f"the chat template does not render tool calls (the assistant's call to "
                    f"{missing[0]!r} is missing from its turn): this model's template has no "
                    "tool-call format; train tool-calling data on a model whose template has one",
                )
            spans.append((start, end))
            cursor = end
        if not spans:
            raise RowError("(row)", "no assistant turn")
        trained = set(range(len(spans))) if self.train_on != "last_turn" else {len(spans) - 1}
        train_all = self.train_on == "all" and not add_generation_prompt
        segments: list[tuple[str, bool]] = []
        cursor = 0
        for k, (start, end) in enumerate(spans):
            segments.append((full[cursor:start], train_all))
            if add_generation_prompt and k == len(spans) - 1:
                return segments, literals  # the prompt ends where the answer would start
            segments.append((full[start:end], train_all or k in trained))
            cursor = end
        segments.append((full[cursor:], train_all))
        return segments, literals

    def preference_segments(
        self, pref: Preference
    ) -> tuple[list[tuple[str, bool]], list[str], list[tuple[str, list[str]]]]:
        """(prompt segments ending with the generation prompt, their escaped literals,
        [(chosen turn text, its literals), (rejected turn text, its literals)]), each answer ending
        with the template's end-of-turn. Raises RowError."""
        segments, literals = self.chat_segments(pref.prompt, add_generation_prompt=True)
        prompt, _ = self.escape_literals(with_system_prompt(pref.prompt, self.spec.system_prompt))
        answers = []
        for content in (pref.chosen, pref.rejected):
            (turn,), own = self.escape_literals([{"role": "assistant", "content": content}])
            full = self._render([*prompt, turn])
            start, end = self._turn_span(full, prompt, None, turn["content"], 0)
            answers.append((full[start:end], own))
        return segments, literals, answers

    # ---- tokenising ------------------------------------------------------------------------

    def encode_texts(
        self, texts: Sequence[str], at_start: Sequence[bool], literal: Sequence[bool] | None = None
    ) -> list[list[int]]:
        """Token ids of each text (no special tokens added), in one batched call per kind.
        ``at_start`` marks texts that begin a sequence; the others are encoded as mid-conversation
        text. ``literal`` marks texts to tokenise as plain text even where they spell a special
        token (``split_special_tokens``)."""
        literal = literal or [False] * len(texts)
        wrapped = [
            t if (first or not t or not self.mid_text_trick) else "\n" + t
            for t, first in zip(texts, at_start, strict=True)
        ]
        out: list[list[int]] = [[] for _ in wrapped]
        for split in (False, True):
            chosen = [i for i, t in enumerate(wrapped) if t and literal[i] == split]
            if not chosen:
                continue
            kwargs = {"split_special_tokens": True} if split else {}
            ids = self.tokenizer(
                [wrapped[i] for i in chosen],
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                **kwargs,
            )["input_ids"]
            for i, seq in zip(chosen, ids, strict=True):
                out[i] = list(seq)
        if self.mid_text_trick:
            n = len(self.newline_ids)
            for i, first in enumerate(at_start):
                if not first and texts[i]:
                    if out[i][:n] == self.newline_ids:
                        out[i] = out[i][n:]
                    else:
                        kwargs = {"split_special_tokens": True} if literal[i] else {}
                        out[i] = list(
                            self.tokenizer(texts[i], add_special_tokens=False, **kwargs)["input_ids"]
                        )
        return out

    @staticmethod
    def pieces(
        segments: Sequence[tuple[str, bool]], literals: Sequence[str], *, at_start: bool = True
    ) -> list[tuple[str, bool, bool, int]]:
        """Segments split at literal placeholders: (text, at_start, literal, segment index) per
        non-empty piece; ``at_start``: the first piece begins the sequence."""
        out: list[tuple[str, bool, bool, int]] = []
        for j, (text, _) in enumerate(segments):
            pos = 0
            parts: list[tuple[str, bool]] = []
            for m in _PLACEHOLDER.finditer(text) if literals else ():
                parts.append((text[pos : m.start()], False))
                parts.append((literals[int(m.group(1))], True))
                pos = m.end()
            parts.append((text[pos:], False))
            for part, is_literal in parts:
                if part:
                    out.append((part, at_start and not out, is_literal, j))
        return out

    def tokenize_segments(
        self, segments: Sequence[tuple[str, bool]], literals: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one conversation's segments, with the BOS rule applied."""
        pieces = self.pieces(segments, literals)
        ids = self.encode_texts([p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
        return self.join_pieces(segments, pieces, ids)

    def join_pieces(
        self,
        segments: Sequence[tuple[str, bool]],
        pieces: Sequence[tuple[str, bool, bool, int]],
        ids: Sequence[list[int]],
    ) -> tuple[list[int], list[int]]:
        """Concatenate the pieces' ids; labels from their segments' trained flags; BOS rule."""
        seq: list[int] = []
        labels: list[int] = []
        for (_, _, _, j), part in zip(pieces, ids, strict=True):
            seq += part
            labels += part if segments[j][1] else [IGNORE_INDEX] * len(part)
        return self.with_bos(seq, labels)

    def with_bos(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        """Apply the BOS rule: one BOS first when ``adds_bos``, never two; position 0 untrained."""
        if self.adds_bos and (not ids or ids[0] != self.bos_id):
            ids, labels = [self.bos_id, *ids], [IGNORE_INDEX, *labels]
        while self.bos_id is not None and len(ids) >= 2 and ids[0] == ids[1] == self.bos_id:
            ids, labels = ids[1:], labels[1:]
        if labels:
            labels[0] = IGNORE_INDEX  # position 0 is never a target after the causal shift
        return ids, labels
