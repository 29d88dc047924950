"""Tool calling in training rows: tool definitions and the assistant's calls, in one shape.

Rows bring them in two dialects:

- OpenAI / Hugging Face: ``tools`` a list of ``{"type": "function", "function": {name,
  description, parameters}}``; an assistant message with ``tool_calls`` (each ``{"type":
  "function", "function": {"name", "arguments"}}``, arguments a JSON object or its text) and
  ``tool`` messages with the results.
- ShareGPT (LLaMA-Factory): ``tools`` a JSON text of a list of bare function definitions; a
  ``function_call`` turn whose value is the JSON text of ``{"name", "arguments"}`` (or a list of
  them: parallel calls); an ``observation`` turn with the result.

Both become what chat templates take (transformers' chat-template convention): ``tools`` as the
wrapped ``{"type": "function", "function": {...}}`` list, an assistant message ``{"role":
"assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": str,
"arguments": dict}}]}`` and ``{"role": "tool", "content": str}``. Errors are ``RowError`` naming
the field.
"""

from __future__ import annotations

import json
from typing import Any

from backends.data.rowerror import RowError, type_name


def _json(value: Any, field: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowError(field, f"{what} is not valid JSON: {exc.msg} (column {exc.colno})") from None


def normalise_tools(value: Any, field: str = "tools") -> list[dict] | None:
    """The row's tool definitions in the wrapped form, or None when it has none (null, "" or [])."""
    if value is None or value == "" or value == []:
        return None
    tools = _json(value, field, "the tool list")
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise RowError(field, f"expected a list of tool definitions, got {type_name(tools)}")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RowError(f"{field}[{i}]", f"expected a tool definition (object), got {type_name(tool)}")
        function = tool.get("function") if tool.get("type") == "function" else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"{field}[{i}]", "a tool definition needs a 'name'")
        out.append({"type": "function", "function": function})
    return out


def _call(call: Any, field: str) -> dict:
    if not isinstance(call, dict):
        raise RowError(field, f"expected a tool call (object), got {type_name(call)}")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowError(field, "a tool call needs a 'name'")
    arguments = _json(function.get("arguments", {}), f"{field}.arguments", "the arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RowError(f"{field}.arguments", f"expected an object, got {type_name(arguments)}")
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tool_calls(value: Any, field: str) -> list[dict]:
    """An assistant's calls (OpenAI ``tool_calls`` or a ShareGPT ``function_call`` value: one call
    or a list, as objects or JSON text) as a non-empty list of ``{"type": "function",
    "function": {"name", "arguments": dict}}``."""
    calls = _json(value, field, "the tool call")
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        raise RowError(field, f"expected one tool call or a list of them, got {type_name(calls)}")
    return [_call(c, f"{field}[{i}]" if isinstance(value, list) else field) for i, c in enumerate(calls)]


def call_names(message: dict) -> list[str]:
    """The function names an assistant message calls ([] for none)."""
    calls = message.get("tool_calls") or []
    return [
        c["function"]["name"] for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)
    ]


def tool_names(tools: list[dict] | None) -> list[str]:
    """The function names of tool definitions (wrapped or bare; others are skipped)."""
    out = []
    for t in tools or []:
        function = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out.append(function["name"])
    return out
