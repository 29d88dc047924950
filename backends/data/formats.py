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

Unpaired feedback's ``label`` may also be called ``kto_tag`` (LLaMA-Factory's KTO column).

Chat lists accept either ``role``/``content`` or ``from``/``value`` items. Roles: ``system``;
``user``/``human``; ``assistant``/``gpt``; ``tool``/``observation`` (a tool's result);
``function_call`` (ShareGPT: an assistant turn whose value is the call's JSON). An assistant
message may carry ``tool_calls`` (OpenAI); the row's ``tools`` column lists the tool definitions
(``backends.data.toolcalls`` gives both one shape, the one chat templates take). A content is a
string or a list of text parts (``{"type": "text", "text"|"value": ...}``). A conversation is an
optional system message, then user and assistant turns alternating, starting with user, with tool
results after an assistant turn that calls tools; for training it must end with an assistant turn,
a preference prompt must end with a user turn (or a tool result). Multimodal rows (a non-empty
``images``/``image``/``videos``/``video``/``audios``/``audio`` column, an ``<image>``/``<video>``/
``<audio>`` placeholder in the text, or a media content part) are refused naming the column or
field: TuneDesk trains text-only models. Required fields that are missing
or null, values of the wrong type, empty answers and unknown roles are row problems
(``RowError``) naming the field path, e.g. ``messages[3].role``. Optional fields (``input``,
``system``, ``history``) may be null or absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.data.rowerror import RowError, type_name
from backends.data.toolcalls import normalise_tools, tool_calls

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference", "feedback")
CHAT_FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_call": "assistant",
}

# Columns and text placeholders of multimodal datasets (LLaMA-Factory's, and the OpenAI parts):
# TuneDesk trains text-only models, so such rows are refused rather than trained without the media.
MEDIA_COLUMNS = ("images", "image", "videos", "video", "audios", "audio")
MEDIA_TAGS = ("<image>", "<video>", "<audio>")
MEDIA_PARTS = ("image", "image_url", "input_image", "audio", "input_audio", "video", "video_url", "file")

Message = dict[str, Any]

__all__ = ["RowError", "parse_row", "detect_row_format", "Conversation", "Preference", "Feedback"]


class Conversation(list):
    """A message list that may carry the row's tool definitions (``tools``: JSON schemas, as
    ``apply_chat_template(tools=...)`` takes them; None when the row has none)."""

    tools: list[dict] | None = None


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
    label = obj.get("label", obj.get("kto_tag"))
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
        raise RowError(field, f"expected a string, got {type_name(value)}")
    return value


def _optional_string(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else _string(value, key)


def _text(value: Any, field: str) -> str:
    """A string that is message text: an image/video/audio placeholder in it is refused."""
    text = _string(value, field)
    tag = next((t for t in MEDIA_TAGS if t in text), None)
    if tag is not None:
        raise RowError(
            field,
            f"holds a {tag} placeholder: a multimodal row (its {tag[1:-1]} would be lost); TuneDesk "
            "trains text-only models, so such rows are refused",
        )
    return text


def _content(value: Any, field: str) -> str:
    """A message content: a string, or a list of text parts (``{"type": "text", "text"|"value":
    str}``, OpenAI's and LLaMA-Factory's); a media part is refused naming its type."""
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in MEDIA_PARTS:
                raise RowError(
                    f"{field}[{i}]",
                    f"multimodal content (a {kind!r} part); TuneDesk trains text-only models, so such "
                    "rows are refused",
                )
            text = part.get("text", part.get("value")) if isinstance(part, dict) else None
            if kind not in (None, "text") or not isinstance(text, str):
                raise RowError(f"{field}[{i}]", 'expected a text part {"type": "text", "text": ...}')
            parts.append(_text(text, f"{field}[{i}].text"))
        return "".join(parts)
    return _text(value, field)


def _message(item: Any, field: str) -> Message:
    if not isinstance(item, dict):
        raise RowError(field, f"expected an object with role and content, got {type_name(item)}")
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
    out: Message = {"role": ROLES[role], "_field": f"{field}.{content_key}", "_rfield": f"{field}.{role_key}"}
    if role == "function_call":  # ShareGPT: the value is the call's JSON
        value = _required(item, content_key, f"{field}.{content_key}")
        out["tool_calls"] = tool_calls(value, f"{field}.{content_key}")
        out["content"] = ""
        return out
    calls = item.get("tool_calls") if out["role"] == "assistant" else None
    if calls:
        out["tool_calls"] = tool_calls(calls, f"{field}.tool_calls")
        value = item.get(content_key)
        out["content"] = "" if value is None else _content(value, f"{field}.{content_key}")
        return out
    out["content"] = _content(
        _required(item, content_key, f"{field}.{content_key}"), f"{field}.{content_key}"
    )
    if out["role"] == "tool":
        for key in ("name", "tool_call_id"):
            if isinstance(item.get(key), str):
                out[key] = item[key]
    return out


_NEXT = {"user": "assistant", "assistant": "user", "tool": "tool or assistant"}


def _conversation(value: Any, field: str, *, ends_with: str) -> list[Message]:
    """Validate a chat list; ``ends_with`` is 'assistant' (training rows) or 'user' (prompts).

    Turns alternate user / assistant, starting with user; an assistant turn that calls tools is
    followed by one or more tool turns (the results), then an assistant turn."""
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of messages, got {type_name(value)}")
    if not value:
        raise RowError(field, "empty conversation")
    messages = [_message(item, f"{field}[{i}]") for i, item in enumerate(value)]
    expected = ("user",)
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system":
            if i != 0:
                raise RowError(m["_rfield"], "a system message is only allowed first")
            continue
        if role not in expected:
            want = " or ".join(repr(e) for e in expected)
            raise RowError(
                m["_rfield"],
                "roles must alternate user/assistant starting with user (tool results after an "
                f"assistant's tool calls): expected {want}, got {role!r}",
            )
        if role != "tool" and not m["content"].strip() and not m.get("tool_calls"):
            raise RowError(m["_field"], "empty answer" if role == "assistant" else "empty message")
        if role == "user":
            expected = ("assistant",)
        elif role == "assistant":
            expected = ("tool",) if m.get("tool_calls") else ("user",)
        else:
            expected = ("tool", "assistant")
    last = messages[-1]
    if last["role"] != ends_with and not (ends_with == "user" and last["role"] == "tool"):
        what = "an assistant turn" if ends_with == "assistant" else "a user turn (the prompt)"
        raise RowError(last["_rfield"], f"the conversation must end with {what}, got {last['role']!r}")
    return [{k: v for k, v in m.items() if not k.startswith("_")} for m in messages]


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
        text = _text(value, field)
    if not text.strip():
        raise RowError(field, "empty answer")
    return text


def _alpaca(obj: dict) -> list[Message]:
    instruction = _text(_required(obj, "instruction"), "instruction")
    extra = _optional_string(obj, "input") or ""
    _text(extra, "input")
    output = _text(_required(obj, "output"), "output")
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
            raise RowError("history", f"expected a list of [user, assistant] pairs, got {type_name(history)}")
        for i, pair in enumerate(history):
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise RowError(f"history[{i}]", "expected a [user, assistant] pair")
            q = _text(pair[0], f"history[{i}][0]")
            a = _text(pair[1], f"history[{i}][1]")
            if not a.strip():
                raise RowError(f"history[{i}][1]", "empty answer")
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _prompt_completion(obj: dict) -> list[Message]:
    prompt = _required(obj, "prompt")
    if isinstance(prompt, list):
        messages = _conversation(prompt, "prompt", ends_with="user")
    else:
        text = _text(prompt, "prompt")
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
            text = _text(value, "prompt")
            if not text.strip():
                raise RowError("prompt", "empty prompt")
            prompt = [{"role": "user", "content": text}]
    return Preference(_with_system(prompt, system_prompt), _answer(obj, "chosen"), _answer(obj, "rejected"))


def _feedback(obj: dict, system_prompt: str | None) -> Feedback:
    key = "label" if "label" in obj or "kto_tag" not in obj else "kto_tag"
    label = _required(obj, key)
    if not isinstance(label, bool):
        raise RowError(key, f"expected true or false, got {type_name(label)}")
    if "messages" in obj:
        messages = _conversation(_required(obj, "messages"), "messages", ends_with="assistant")
    elif "conversations" in obj:
        messages = _conversation(_required(obj, "conversations"), "conversations", ends_with="assistant")
    else:
        messages = _prompt_completion(obj)
    messages = _with_system(messages, system_prompt)
    return Feedback(messages[:-1], messages[-1]["content"], label)


def _media(obj: dict) -> None:
    """Refuse a multimodal row, naming its media column."""
    for column in MEDIA_COLUMNS:
        if obj.get(column) not in (None, "", [], {}):
            raise RowError(
                column,
                f"multimodal row: the {column!r} column holds media; TuneDesk trains text-only models, "
                f"so the {column} would be lost. Use a text-only dataset (or remove the {column!r} "
                "column and the <image>/<video>/<audio> placeholders from the text)",
            )


def _chat(obj: dict, key: str, system_prompt: str | None) -> list[Message]:
    """A ``messages`` / ``conversations`` row, with its ``tools`` (as ``Conversation.tools``)."""
    messages = _with_system(_conversation(_required(obj, key), key, ends_with="assistant"), system_prompt)
    tools = normalise_tools(obj.get("tools"))
    if tools is None:
        return messages
    out = Conversation(messages)
    out.tools = tools
    return out


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
        raise RowError("(row)", f"expected a JSON object, got {type_name(obj)}")
    _media(obj)
    if fmt == "text":
        # Plain text (pre-training, `data from-folder`) may mention "<image>" as words: only a media
        # column (checked above) makes it a multimodal row.
        text = _string(_required(obj, "text"), "text")
        if not text.strip():
            raise RowError("text", "empty text")
        return text
    if fmt == "preference":
        return _preference(obj, system_prompt)
    if fmt == "feedback":
        return _feedback(obj, system_prompt)
    if fmt == "messages":
        return _chat(obj, "messages", system_prompt)
    if fmt == "sharegpt":
        if isinstance(obj.get("system"), str) and obj["system"].strip():  # LLaMA-Factory's column
            system_prompt = obj["system"]
        return _chat(obj, "conversations", system_prompt)
    if fmt == "alpaca":
        messages = _alpaca(obj)
    elif fmt == "prompt_completion":
        messages = _prompt_completion(obj)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return _with_system(messages, system_prompt)
