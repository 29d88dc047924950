"""Dataset formats: detection from a row's fields, and per-row validation into one common shape.

Formats (names as in ``DataConfig.format``):

- ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
  (OpenAI chat; optional leading system message; multi-turn).
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": str}, ...]}``.
- ``alpaca``: ``instruction``, optional ``input``, ``output``, optional ``system`` and ``history``
  (a list of ``[user, assistant]`` pairs before this turn); the user turn is
  ``instruction + "\\n" + input`` (LLaMA-Factory's convention) or just the instruction.
- ``prompt_completion``: ``prompt`` and ``completion`` (strings, or TRL's conversational form: a
  message list and a one-message assistant list).
- ``text``: ``{"text": str}``: plain language-model text, trained on every token, EOS appended.
- ``preference`` (DPO): ``prompt``/``chosen``/``rejected`` (strings or messages, as TRL), or
  ShareGPT style ``conversations`` + ``chosen`` + ``rejected`` (each ``{"from": "gpt", "value"}``).
- ``feedback`` (KTO, unpaired thumbs up/down): ``label`` true or false beside ``prompt`` +
  ``completion`` (TRL's unpaired preference form) or a ``messages``/``conversations`` list ending
  with the rated assistant turn (LLaMA-Factory's KTO form); detected when ``label`` is a boolean
  (or the string "true"/"false", which is then a row problem: it must be a JSON boolean).

Chat lists accept either ``role``/``content`` or ``from``/``value`` items. Roles: ``system``;
``user``/``human``; ``assistant``/``gpt``. A conversation is an optional system message, then
user and assistant turns alternating, starting with user; for training it must end with an
assistant turn, a preference prompt must end with a user turn. Required fields that are missing
or null, values of the wrong type, empty answers and unknown roles are row problems
(``RowError``) naming the field path, e.g. ``messages[3].role``. Optional fields (``input``,
``system``, ``history``) may be null or absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference", "feedback")
CHAT_FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
}

Message = dict[str, str]


class Conversation(list):
    """A message list that may carry the row's tool definitions (``tools``: JSON schemas, as
    ``apply_chat_template(tools=...)`` takes them; None when the row has none)."""

    tools: list[dict] | None = None


class RowError(Exception):
    """One row is invalid: ``field`` (a path such as ``messages[2].content``) and ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class Preference:
    """A validated preference pair: the prompt conversation (ends with a user turn) and the two
    assistant answers' contents."""

    prompt: list[Message]
    chosen: str
    rejected: str


@dataclass
class Feedback:
    """A validated unpaired-feedback row: the prompt conversation (ends with a user turn), the rated
    answer's content and whether it is desirable."""

    prompt: list[Message]
    completion: str
    desirable: bool


def detect_row_format(obj: Any) -> str | None:
    """The format a row's fields point to, or None when they match no format (or it is no object)."""
    if not isinstance(obj, dict):
        return None
    label = obj.get("label")
    rated = isinstance(label, bool) or (isinstance(label, str) and label.strip().lower() in ("true", "false"))
    if rated and any(k in obj for k in ("completion", "messages", "conversations")):
        return "feedback"  # a quoted "true"/"false" too, so that row's error names the label
    if "chosen" in obj or "rejected" in obj:
        return "preference"
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "text"
    return None


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _required(obj: dict, key: str, field: str | None = None) -> Any:
    field = field or key
    if key not in obj:
        raise RowError(field, "missing")
    value = obj[key]
    if value is None:
        raise RowError(field, "is null")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {_type_name(value)}")
    return value


def _optional_string(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else _string(value, key)


def _content(value: Any, field: str) -> str:
    """A message content: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise RowError(f"{field}[{i}]", "only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    return _string(value, field)


def _message(item: Any, field: str) -> Message:
    if not isinstance(item, dict):
        raise RowError(field, f"expected an object with role and content, got {_type_name(item)}")
    if "role" in item or "content" in item:
        role_key, content_key = "role", "content"
    elif "from" in item or "value" in item:
        role_key, content_key = "from", "value"
    else:
        raise RowError(field, "expected 'role' and 'content' (or 'from' and 'value')")
    role = _string(_required(item, role_key, f"{field}.{role_key}"), f"{field}.{role_key}")
    if role not in ROLES:
        known = ", ".join(sorted(ROLES))
        raise RowError(f"{field}.{role_key}", f"unknown role {role!r} (known: {known})")
    content = _content(_required(item, content_key, f"{field}.{content_key}"), f"{field}.{content_key}")
    return {
        "role": ROLES[role],
        "content": content,
        "_field": f"{field}.{content_key}",
        "_rfield": f"{field}.{role_key}",
    }


def _conversation(value: Any, field: str, *, ends_with: str) -> list[Message]:
    """Validate a chat list; ``ends_with`` is 'assistant' (training rows) or 'user' (prompts)."""
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of messages, got {_type_name(value)}")
    if not value:
        raise RowError(field, "empty conversation")
    messages = [_message(item, f"{field}[{i}]") for i, item in enumerate(value)]
    expected = "user"
    for i, m in enumerate(messages):
        if m["role"] == "system":
            if i != 0:
                raise RowError(m["_rfield"], "a system message is only allowed first")
            continue
        if m["role"] != expected:
            raise RowError(
                m["_rfield"],
                f"roles must alternate user/assistant starting with user: expected {expected!r}, got {m['role']!r}",
            )
        if not m["content"].strip():
            raise RowError(m["_field"], "empty answer" if m["role"] == "assistant" else "empty message")
        expected = "assistant" if expected == "user" else "user"
    last = messages[-1]
    if last["role"] != ends_with:
        what = "an assistant turn" if ends_with == "assistant" else "a user turn (the prompt)"
        raise RowError(last["_rfield"], f"the conversation must end with {what}, got {last['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _answer(obj: dict, key: str) -> str:
    """A preference answer: a string, one message object, or a list of one assistant message."""
    value = _required(obj, key)
    if isinstance(value, list):
        if len(value) != 1:
            raise RowError(key, f"expected one assistant message, got {len(value)}")
        value, field = value[0], f"{key}[0]"
    else:
        field = key
    if isinstance(value, dict):
        m = _message(value, field)
        if m["role"] != "assistant":
            raise RowError(m["_rfield"], f"the answer must be an assistant message, got {m['role']!r}")
        text, field = m["content"], m["_field"]
    else:
        text = _string(value, field)
    if not text.strip():
        raise RowError(field, "empty answer")
    return text


def _alpaca(obj: dict) -> list[Message]:
    instruction = _string(_required(obj, "instruction"), "instruction")
    extra = _optional_string(obj, "input") or ""
    output = _string(_required(obj, "output"), "output")
    if not output.strip():
        raise RowError("output", "empty answer")
    user = f"{instruction}\n{extra}" if extra.strip() else instruction
    if not user.strip():
        raise RowError("instruction", "empty prompt (instruction and input are both empty)")
    messages: list[Message] = []
    system = _optional_string(obj, "system")
    if system:
        messages.append({"role": "system", "content": system})
    history = obj.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise RowError(
                "history", f"expected a list of [user, assistant] pairs, got {_type_name(history)}"
            )
        for i, pair in enumerate(history):
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise RowError(f"history[{i}]", "expected a [user, assistant] pair")
            q = _string(pair[0], f"history[{i}][0]")
            a = _string(pair[1], f"history[{i}][1]")
            if not a.strip():
                raise RowError(f"history[{i}][1]", "empty answer")
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _prompt_completion(obj: dict) -> list[Message]:
    prompt = _required(obj, "prompt")
    if isinstance(prompt, list):
        messages = _conversation(prompt, "prompt", ends_with="user")
    else:
        text = _string(prompt, "prompt")
        if not text.strip():
            raise RowError("prompt", "empty prompt")
        messages = [{"role": "user", "content": text}]
    return [*messages, {"role": "assistant", "content": _answer(obj, "completion")}]


def _preference(obj: dict, system_prompt: str | None) -> Preference:
    if "conversations" in obj:
        prompt = _conversation(_required(obj, "conversations"), "conversations", ends_with="user")
    else:
        value = _required(obj, "prompt")
        if isinstance(value, list):
            prompt = _conversation(value, "prompt", ends_with="user")
        else:
            text = _string(value, "prompt")
            if not text.strip():
                raise RowError("prompt", "empty prompt")
            prompt = [{"role": "user", "content": text}]
    return Preference(_with_system(prompt, system_prompt), _answer(obj, "chosen"), _answer(obj, "rejected"))


def _feedback(obj: dict, system_prompt: str | None) -> Feedback:
    label = _required(obj, "label")
    if not isinstance(label, bool):
        raise RowError("label", f"expected true or false, got {_type_name(label)}")
    if "messages" in obj:
        messages = _conversation(_required(obj, "messages"), "messages", ends_with="assistant")
    elif "conversations" in obj:
        messages = _conversation(_required(obj, "conversations"), "conversations", ends_with="assistant")
    else:
        messages = _prompt_completion(obj)
    messages = _with_system(messages, system_prompt)
    return Feedback(messages[:-1], messages[-1]["content"], label)


def parse_row(
    fmt: str, obj: Any, *, system_prompt: str | None = None
) -> list[Message] | str | Preference | Feedback:
    """Validate one row of format ``fmt`` and return its common shape.

    Returns a message list (the chat formats; ends with an assistant turn; a ``messages`` row's
    optional ``tools`` list rides along as ``Conversation.tools``), the text (``text``), a
    ``Preference`` (``preference``) or a ``Feedback`` (``feedback``). ``system_prompt`` is added to conversations that have no
    system message. Raises RowError(field, reason) for an invalid row.
    """
    if not isinstance(obj, dict):
        raise RowError("(row)", f"expected a JSON object, got {_type_name(obj)}")
    if fmt == "text":
        text = _string(_required(obj, "text"), "text")
        if not text.strip():
            raise RowError("text", "empty text")
        return text
    if fmt == "preference":
        return _preference(obj, system_prompt)
    if fmt == "feedback":
        return _feedback(obj, system_prompt)
    if fmt == "messages":
        messages = _conversation(_required(obj, "messages"), "messages", ends_with="assistant")
        tools = obj.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
                raise RowError(
                    "tools", f"expected a list of tool definitions (objects), got {_type_name(tools)}"
                )
            messages = Conversation(_with_system(messages, system_prompt))
            messages.tools = tools
            return messages
    elif fmt == "sharegpt":
        messages = _conversation(_required(obj, "conversations"), "conversations", ends_with="assistant")
    elif fmt == "alpaca":
        messages = _alpaca(obj)
    elif fmt == "prompt_completion":
        messages = _prompt_completion(obj)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return _with_system(messages, system_prompt)
