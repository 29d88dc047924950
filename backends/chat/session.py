"""The chat session shared by both backends: prompt rendering with what the adapter's run recorded
(``backends.data.render``: template, system prompt, BOS rule, special-token policy),
sampling settings, streaming decode, stop, timing and the ``token`` / ``reply_finished`` events.

A backend (``torch_generator.TorchChatEngine``, ``mlx_generator.MlxChatEngine``) implements the
small ``ChatEngine`` protocol: load adapters without merging, and yield token ids one at a time
for a prompt. Everything else lives here, once: which template a reply uses, end-of-turn
detection, max-new-tokens, incremental detokenisation, stop between tokens, the statistics, and
several replies streaming side by side (round-robin, one token each, so base and tuned model
stream together from one copy of the base weights).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from backends.chat.adapters import AdapterInfo, check_base_model, read_adapter
from backends.data.formats import RowError
from backends.data.render import PromptRenderer, RenderedPrompt, RenderSpec
from backends.data.run_prompt import spec_for_run
from backends.data.templates import CHATML_TEMPLATE, model_template
from backends.errors import UserInputError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one reply (the names and meanings of transformers' ``generate``).

    ``temperature``: 0 means greedy (argmax), else logits are divided by it before sampling;
    ``top_p``: nucleus sampling keeps the smallest set of tokens whose probability sums to at least
    ``top_p`` (Holtzman et al. 2019; 1.0 = off); ``max_new_tokens``: reply length cap in tokens;
    ``repetition_penalty``: CTRL's penalty (Keskar et al. 2019) on every token already in the
    prompt or reply, 1.0 = off; ``seed``: seed of the sampler's random generator.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1 = off)"),
            ("seed", self.seed >= 0, "must be >= 0"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise UserInputError(f"{why} (got {getattr(self, name)!r})", field=name)

    @property
    def greedy(self) -> bool:
        """True when the reply is the argmax at every step."""
        return self.temperature == 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Sampling:
        """Settings from a command dict; missing keys take the defaults, wrong types are errors."""
        kwargs: dict[str, Any] = {}
        for name, kind in (
            ("temperature", float),
            ("top_p", float),
            ("max_new_tokens", int),
            ("repetition_penalty", float),
            ("seed", int),
        ):
            if raw.get(name) is None:
                continue
            value = raw[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (kind is int and value != int(value))
            ):
                raise UserInputError(
                    f"must be a number{' (whole)' if kind is int else ''} (got {value!r})", field=name
                )
            kwargs[name] = kind(value)
        return cls(**kwargs)


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate a chat history: a non-empty list of {role, content} ending with a user turn.

    Raises UserInputError naming the message index and field.
    """
    if not isinstance(messages, list) or not messages:
        raise UserInputError("must be a non-empty list of {role, content}", field="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserInputError("must be an object with role and content", field=f"messages[{i}]")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise UserInputError(f"unknown role {role!r} (use one of {ROLES})", field=f"messages[{i}].role")
        if not isinstance(content, str):
            raise UserInputError("must be a string", field=f"messages[{i}].content")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise UserInputError("the last message must be the user's", field=f"messages[{len(out) - 1}].role")
    return out


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """Put ``system`` first (replacing a system message already there); None or "" leaves them."""
    if not system:
        return list(messages)
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def template_digest(template: str | None) -> str | None:
    """SHA-256 of a chat template's text (to show which template a reply used)."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest() if template is not None else None


def render_prompt(
    tokenizer: Any, messages: list[dict[str, str]], template: str | PromptRenderer
) -> list[int]:
    """Token ids of ``messages`` plus the assistant header, through the one prompt renderer
    (``backends.data.render``): ``template`` is a ``PromptRenderer`` (a run's recorded spec) or a
    bare template (the tokenizer's BOS rule, no system prompt). Raises UserInputError when the
    template fails on these messages (e.g. it forbids a system turn)."""
    return rendered_prompt(tokenizer, messages, template).input_ids


def rendered_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    renderer: str | PromptRenderer,
    tools: list[dict] | None = None,
) -> RenderedPrompt:
    """The full ``RenderedPrompt`` (text with special tokens visible, ids) of a chat prompt."""
    if not isinstance(renderer, PromptRenderer):
        renderer = PromptRenderer(tokenizer, RenderSpec(renderer))
    try:
        return renderer.render_chat(messages, tools=tools, add_generation_prompt=True)
    except RowError as exc:  # jinja2 TemplateError and the template's own raise_exception
        raise UserInputError(
            f"{exc.reason.replace('this row', 'these messages')}", field="messages"
        ) from None


class TextStream:
    """Incremental detokeniser: feed token ids, get the new text as soon as it is complete.

    The concatenation of every piece equals ``tokenizer.decode(all_ids, skip_special_tokens=True)``.
    A piece is held back while it ends in an incomplete UTF-8 character (U+FFFD); after a newline
    the window restarts, keeping one token of context (the approach of transformers'
    ``TextStreamer``), so decoding stays O(line length) per token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: list[int] = []
        self._printed = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Add one token; return the text that became final (maybe "")."""
        self._cache.append(int(token_id))
        text = self._decode(self._cache)
        if text.endswith("\ufffd"):
            return ""
        piece = text[self._printed :]
        if text.endswith("\n"):
            self._cache = self._cache[-1:]
            self._printed = len(self._decode(self._cache))
        else:
            self._printed = len(text)
        return piece

    def flush(self) -> str:
        """Whatever is still held back (at the end of a reply)."""
        text = self._decode(self._cache)
        piece = text[self._printed :]
        self._printed = len(text)
        return piece


class ChatEngine(Protocol):
    """What a framework backend provides to the session (PyTorch or MLX)."""

    name: str  # "torch" | "mlx"
    device: str  # e.g. "cpu", "cuda", "mps", "gpu"
    tokenizer: Any  # the Hugging Face tokenizer (templates and decoding)
    eos_token_ids: set[int]  # ids that end a reply

    def add_adapter(self, key: str, info: AdapterInfo) -> None:
        """Load an adapter next to the base weights (no merge), under ``key``. Raises
        UserInputError naming the adapter path when a weight does not fit the model."""
        ...

    def remove_adapter(self, key: str) -> None:
        """Unload an adapter (frees its memory)."""
        ...

    def tokens(self, prompt_ids: list[int], sampling: Sampling, adapter: str | None) -> Iterator[int]:
        """Yield generated token ids one by one, with adapter ``key`` active (None: base model).
        Must (re)activate its adapter on every step, since several of these iterators may be
        advanced in turn. May stop after ``sampling.max_new_tokens``."""
        ...


@dataclass
class Reply:
    """Statistics and text of one finished reply (the ``reply_finished`` event's fields).

    ``tokens``: tokens generated (the end-of-turn token included when one ended the reply);
    ``time_to_first_token``: seconds from the request to the first generated token (prompt
    processing included); ``tokens_per_second``: decode rate, (tokens - 1) / (time of the last
    token - time of the first), as mlx-lm reports it (tokens / elapsed for a one-token reply);
    ``elapsed``: seconds from the request to the end; ``finish_reason``: ``eos`` (the model ended
    its turn), ``length`` (max_new_tokens), or ``stop`` (the user pressed Stop).
    """

    stream: str
    text: str
    tokens: int
    prompt_tokens: int
    time_to_first_token: float | None
    tokens_per_second: float | None
    elapsed: float
    finish_reason: str
    adapter: str | None
    template_sha256: str | None

    def fields(self) -> dict[str, Any]:
        """The ``reply_finished`` event's fields."""
        return asdict(self)


@dataclass
class StreamRequest:
    """One reply to produce: its id (for events), the adapter (None: the base model) and messages."""

    id: str
    adapter: str | None
    messages: list[dict[str, str]]
    tools: list[dict] | None = None  # tool JSON schemas, for templates that list tools


Emit = Callable[[str, dict[str, Any]], None]


class ChatSession:
    """A loaded base model plus adapters; produces replies and reports them through ``emit``.

    ``emit(event_name, fields)`` receives ``token`` (``text``, ``stream``) and ``reply_finished``
    (``Reply.fields()``) in generation order. ``model_dir``/``model_name`` identify the base model
    so an adapter trained on another one is refused. ``convert``: turns an adapter into the
    engine's format (PEFT <-> MLX) before loading, keeping its run folder and template.
    """

    def __init__(
        self,
        engine: ChatEngine,
        model_dir: Path,
        model_name: str | None = None,
        *,
        convert: Callable[[AdapterInfo], AdapterInfo] | None = None,
    ) -> None:
        self.engine = engine
        self._convert = convert
        self.model_dir = Path(model_dir)
        self.model_name = model_name
        self.adapters: dict[str, AdapterInfo] = {}
        self.default_adapter: str | None = None
        self._renderers: dict[str | None, PromptRenderer] = {}
        self._stop = threading.Event()

    # --- adapters ---
    def load_adapter(self, path: str | Path) -> str:
        """Check and load the adapter at ``path`` (run folder or adapter folder) if not yet loaded;
        returns its key (the resolved adapter folder). Raises UserInputError naming the path."""
        info = read_adapter(path)
        key = str(info.path.resolve())
        if key in self.adapters:
            return key
        check_base_model(info, self.model_dir, self.model_name)
        if self._convert is not None:
            info = self._convert(info)
        self.engine.add_adapter(key, info)
        self.adapters[key] = info
        return key

    def set_adapter(self, path: str | Path | None) -> str | None:
        """Make ``path`` the adapter of later replies that name none (None: the base model).
        Adapters no longer used are unloaded; the base model is never reloaded."""
        key = self.load_adapter(path) if path is not None else None
        self.default_adapter = key
        self._renderers.pop(None, None)  # the base model borrows the default adapter's system prompt
        for old in [k for k in self.adapters if k != key]:
            self._renderers.pop(old, None)
            self.engine.remove_adapter(old)
            del self.adapters[old]
        return key

    def renderer_for(self, adapter: str | None) -> PromptRenderer:
        """The prompt renderer of replies with ``adapter``: exactly what its run recorded (template,
        system prompt, BOS rule, special-token policy; ``backends.data.render.spec_for_run``). The
        base model renders with its own template (or, for a model without one, the loaded
        adapter's) and the tokenizer's BOS rule, with the default adapter's system prompt so a
        side-by-side comparison differs only in the adapter. Raises UserInputError when there is
        no template."""
        if adapter in self._renderers:
            return self._renderers[adapter]
        tokenizer = self.engine.tokenizer
        if adapter is not None:
            info = self.adapters[adapter]
            spec = (
                spec_for_run(info.path)
                or (spec_for_run(info.run_dir) if info.run_dir is not None else None)
                or RenderSpec(None)
            )
            template = spec.template or info.chat_template
            if template is None and info.meta.get("template_choice") == "chatml":
                template = CHATML_TEMPLATE  # a checkpoint of a run trained with data.chat_template: chatml
        else:
            default = self.renderer_for(self.default_adapter) if self.default_adapter else None
            spec = RenderSpec(None, system_prompt=default.spec.system_prompt if default else None)
            template = None
        template = template or model_template(tokenizer)
        if template is None:
            template = next((i.chat_template for i in self.adapters.values() if i.chat_template), None)
        if template is None:
            raise UserInputError(
                "this model has no chat template and no adapter with one is loaded",
                file=self.model_dir,
                field="chat_template",
                hint="train an adapter with data.chat_template: chatml, then chat with it",
            )
        renderer = PromptRenderer(tokenizer, RenderSpec(**{**spec.to_dict(), "template": template}))
        self._renderers[adapter] = renderer
        return renderer

    def template_for(self, adapter: str | None) -> str:
        """The chat template of replies with ``adapter`` (see ``renderer_for``)."""
        return self.renderer_for(adapter).template

    def prompt(self, request: StreamRequest) -> RenderedPrompt:
        """The exact prompt (text with special tokens visible, token ids) ``request`` feeds the
        model. Raises UserInputError for a bad adapter or messages."""
        key = self.load_adapter(request.adapter) if request.adapter is not None else None
        return rendered_prompt(self.engine.tokenizer, request.messages, self.renderer_for(key), request.tools)

    # --- stop ---
    def request_stop(self) -> None:
        """Stop the reply(ies) in progress after their current token (thread-safe)."""
        self._stop.set()

    # --- generation ---
    def generate(
        self,
        requests: list[StreamRequest],
        sampling: Sampling,
        emit: Emit,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Reply]:
        """Produce one reply per request, streaming them together (one token each in turn).

        Stops every stream when ``request_stop`` was called after this call began or
        ``should_stop()`` returns True (checked between tokens). Returns the replies in request order.
        Raises UserInputError for a bad adapter or messages (before any token is generated).
        """
        self._stop.clear()
        start = time.perf_counter()
        prepared = []
        for req in requests:
            key = self.load_adapter(req.adapter) if req.adapter is not None else None
            renderer = self.renderer_for(key)
            ids = rendered_prompt(self.engine.tokenizer, req.messages, renderer, req.tools).input_ids
            prepared.append((req, key, renderer.template, ids))
        states = []
        for req, key, template, ids in prepared:
            states.append(
                {
                    "req": req,
                    "adapter": key,
                    "template": template,
                    "prompt": ids,
                    "iter": self.engine.tokens(ids, sampling, key),
                    "text": TextStream(self.engine.tokenizer),
                    "pieces": [],
                    "n": 0,
                    "first": None,
                    "last": None,
                }
            )
        eos = self.engine.eos_token_ids
        replies: dict[int, Reply] = {}

        def finish(index: int, reason: str) -> None:
            st = states[index]
            close = getattr(st["iter"], "close", None)
            if close is not None:
                close()
            tail = st["text"].flush()
            if tail:
                st["pieces"].append(tail)
                emit("token", {"text": tail, "stream": st["req"].id})
            now = time.perf_counter()
            n, first, last = st["n"], st["first"], st["last"]
            if n > 1 and last > first:
                tps = (n - 1) / (last - first)
            elif n == 1:
                tps = 1 / max(last - start, 1e-9)
            else:
                tps = None
            info = self.adapters.get(st["adapter"]) if st["adapter"] else None
            reply = Reply(
                stream=st["req"].id,
                text="".join(st["pieces"]),
                tokens=n,
                prompt_tokens=len(st["prompt"]),
                time_to_first_token=(first - start) if first is not None else None,
                tokens_per_second=tps,
                elapsed=now - start,
                finish_reason=reason,
                adapter=str(info.run_dir or info.path) if info else None,
                template_sha256=template_digest(st["template"]),
            )
            replies[index] = reply
            emit("reply_finished", reply.fields())

        active = list(range(len(states)))
        while active:
            for index in list(active):
                if self._stop.is_set() or (should_stop is not None and should_stop()):
                    for i in active:
                        finish(i, "stop")
                    active = []
                    break
                st = states[index]
                try:
                    tok = next(st["iter"])
                except StopIteration:
                    active.remove(index)
                    finish(index, "length")
                    continue
                now = time.perf_counter()
                st["first"] = st["first"] if st["first"] is not None else now
                st["last"] = now
                st["n"] += 1
                reason = None
                if tok in eos:
                    reason = "eos"
                else:
                    piece = st["text"].add(tok)
                    if piece:
                        st["pieces"].append(piece)
                        emit("token", {"text": piece, "stream": st["req"].id})
                    if st["n"] >= sampling.max_new_tokens:
                        reason = "length"
                if reason:
                    active.remove(index)
                    finish(index, reason)
        return [replies[i] for i in range(len(states))]
