"""The OpenAI chat-completions wire format, without a server: read a request body into messages and
sampling settings, shape replies and stream chunks, and OpenAI's error object.

Field names and meanings follow OpenAI's API reference for ``POST /v1/chat/completions`` and
``GET /v1/models``. What TuneDesk's chat session cannot do (several choices, tools, logprobs,
frequency or presence penalties) is refused with a 400 naming the field, never ignored silently.
``repetition_penalty`` (CTRL's, 1.0 = off) is accepted as an extension, as llama.cpp's and vLLM's
servers do.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from backends.chat.session import Sampling, check_messages
from backends.errors import UserInputError

# OpenAI's documented defaults, used when a request leaves a setting out.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
MAX_STOP_SEQUENCES = 4
# Request fields that change nothing at these values and are refused at any other (unsupported).
NEUTRAL = {
    "n": (1, None),
    "frequency_penalty": (0, 0.0, None),
    "presence_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
    "logit_bias": (None, {}),
}


class ApiError(Exception):
    """An HTTP error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """The JSON error object OpenAI's clients read."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    @classmethod
    def from_user_error(cls, exc: UserInputError) -> ApiError:
        """A 400 for a TuneDesk input error (its message names the field)."""
        return cls(400, str(exc), param=exc.field)


@dataclass
class ChatRequest:
    """One parsed ``/v1/chat/completions`` request.

    ``max_tokens``: None means "until the end of turn or the model's context"; ``stop``: up to
    four strings that end the reply where they first appear (not included in it).
    """

    model: str | None
    messages: list[dict[str, str]]
    temperature: float
    top_p: float
    max_tokens: int | None
    seed: int
    repetition_penalty: float
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False

    def sampling(self, max_new_tokens: int) -> Sampling:
        """The session's sampling settings for this request (greedy at temperature 0)."""
        try:
            return Sampling(
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=max_new_tokens,
                repetition_penalty=self.repetition_penalty,
                seed=self.seed,
            )
        except UserInputError as exc:
            raise ApiError.from_user_error(exc) from None


def _number(body: dict[str, Any], name: str, default: Any, kind: type = float) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise ApiError(400, f"'{name}' must be a number{' (whole)' if kind is int else ''}", param=name)
    return kind(value)


def _content(value: Any, index: int) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ApiError(
                    400,
                    "only text content parts are supported ({'type': 'text', 'text': ...})",
                    param=f"messages[{index}].content",
                )
            texts.append(part["text"])
        return "".join(texts)
    if value is None:
        raise ApiError(400, "a message needs text content", param=f"messages[{index}].content")
    raise ApiError(400, "must be a string or a list of text parts", param=f"messages[{index}].content")


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, "must be an object with role and content", param=f"messages[{i}]")
        role = "system" if m.get("role") == "developer" else m.get("role")  # OpenAI's newer system role
        out.append({"role": role, "content": _content(m.get("content"), i)})
    try:
        return check_messages(out)
    except UserInputError as exc:
        raise ApiError.from_user_error(exc) from None


def _stop(raw: Any) -> list[str]:
    if raw is None:
        return []
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ApiError(400, f"at most {MAX_STOP_SEQUENCES} stop sequences", param="stop")
    return list(stops)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Read a ``/v1/chat/completions`` body. Raises ApiError(400) naming the field for a body that
    is not a JSON object, bad messages, a setting of the wrong type, or an unsupported feature.

    Without ``seed`` a sampled reply gets a fresh random seed (as OpenAI's replies vary); with
    ``temperature: 0`` the reply is greedy and the seed does not matter.
    """
    try:
        body = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] not in neutral:
            raise ApiError(
                400,
                f"'{name}' is not supported by this server (leave it out)",
                param=name,
                code="unsupported",
            )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", param="model")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", None, int)
        if max_tokens < 1:
            raise ApiError(400, "'max_tokens' must be at least 1", param="max_tokens")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    seed = _number(body, "seed", None, int)
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        temperature=_number(body, "temperature", DEFAULT_TEMPERATURE),
        top_p=_number(body, "top_p", DEFAULT_TOP_P),
        max_tokens=max_tokens,
        seed=seed if seed is not None else secrets.randbelow(2**31),
        repetition_penalty=_number(body, "repetition_penalty", 1.0),
        stop=_stop(body.get("stop")),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
    )


class StopMatcher:
    """Cuts a streamed reply at the first of its stop strings.

    ``feed(piece)`` returns the text that is safe to send: text that may be the start of a stop
    string is held back until the next piece decides. ``stopped`` turns True at a match; the text
    from the match on is never returned. ``flush()`` returns what was held back at the end.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """Add generated text; returns the part that can go to the client now."""
        if self.stopped:
            return ""
        text = self._held + piece
        if not self.stops:
            self._held = ""
            return text
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = 0  # the longest tail of text that begins some stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if s.startswith(text[-n:]):
                    keep = n
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text held back when the reply ended without a match."""
        text, self._held = ("" if self.stopped else self._held), ""
        return text


def finish_reason(session_reason: str, stopped_by_string: bool) -> str:
    """OpenAI's ``finish_reason`` for the session's (``eos``, ``length``, ``stop``): ``stop`` when
    the model ended its turn or a stop string matched, ``length`` at max_tokens."""
    if stopped_by_string or session_reason == "eos":
        return "stop"
    return "length" if session_reason == "length" else "stop"


def new_id() -> str:
    """A completion id in OpenAI's style (``chatcmpl-`` + 24 hex digits)."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object (token counts)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    cid: str, model: str, text: str, reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A whole (non-streamed) ``chat.completion`` object with one choice."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    reason: str | None = None,
    *,
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream; with ``usage_`` the final usage chunk (no choices)."""
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage_ is not None:
        out["choices"] = []
        out["usage"] = usage_
    else:
        out["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
    return out


def model_list(ids: list[str], created: int) -> dict[str, Any]:
    """The ``/v1/models`` answer."""
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": created, "owned_by": "tunedesk"} for i in ids],
    }
