"""Reward functions for GRPO: built-ins a non-programmer can pick, and a user's Python file.

Each function maps (prompt, completion, answer) to a float; ``prompt`` is the rendered prompt
text, ``completion`` the sampled answer (special tokens removed), ``answer`` the data row's
reference answer (its last assistant turn; may be empty). Built-ins (``grpo.rewards[].type``):

- ``matches_answer``: 1 when the completion equals the reference answer (ignoring case and
  surrounding space), or when the last number in the completion equals the answer's number; else 0.
- ``valid_json``: 1 when the completion (without a surrounding ```json fence) parses as JSON.
- ``regex``: 1 when ``pattern`` is found in the completion (Python ``re.search``), else 0.
- ``length``: 1 when the completion has between ``min`` and ``max`` characters, else 0.
- ``python``: ``function`` (default ``reward``) of the user's ``file``, called as
  ``function(prompt=..., completion=..., answer=...)`` and returning a number. The file is
  imported only when the config names it, in the training worker process. An exception, a
  non-number or a NaN raises ``RewardError`` naming the file, the function and the row.

``build_rewards(specs)`` returns the named functions with their weights; the reward of a
completion is the weighted sum (``backends.training.grpo``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import UserInputError

RewardFn = Callable[[str, str, str], float]
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class RewardError(UserInputError):
    """A user's reward function failed (raised, or returned something that is not a number)."""


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "."))
    except ValueError:
        return None


def matches_answer(prompt: str, completion: str, answer: str) -> float:
    """1.0 when the completion is the reference answer (see module docstring), else 0.0."""
    if not answer.strip():
        return 0.0
    if completion.strip().casefold() == answer.strip().casefold():
        return 1.0
    want, got = _number(answer), _number(completion)
    return 1.0 if want is not None and got is not None and want == got else 0.0


def valid_json(prompt: str, completion: str, answer: str) -> float:
    """1.0 when the completion parses as JSON (a ```json fence around it is allowed), else 0.0."""
    text = completion.strip()
    fenced = _FENCE.match(text)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return 0.0
    return 1.0


@dataclass
class Reward:
    """One reward function of a run: its name in events, weight and callable."""

    name: str
    weight: float
    fn: RewardFn


def _load_python(file: Path, function: str) -> RewardFn:
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserInputError("reward file not found", file=path, field="grpo.rewards.file")
    spec = importlib.util.spec_from_file_location(f"tunedesk_reward_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserInputError("cannot import this file as Python", file=path, field="grpo.rewards.file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RewardError(
            f"importing the reward file failed: {type(exc).__name__}: {exc}",
            file=path,
            field="grpo.rewards.file",
        ) from exc
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UserInputError(
            f"the reward file has no function {function!r}", file=path, field="grpo.rewards.function"
        )

    def call(prompt: str, completion: str, answer: str) -> float:
        try:
            value = fn(prompt=prompt, completion=completion, answer=answer)
        except Exception as exc:
            raise RewardError(
                f"reward function {function!r} raised {type(exc).__name__}: {exc}",
                file=path,
                field="grpo.rewards.function",
            ) from exc
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RewardError(
                f"reward function {function!r} returned {value!r}; it must return a finite number",
                file=path,
                field="grpo.rewards.function",
            )
        return float(value)

    return call


def build_rewards(specs: list[Any]) -> list[Reward]:
    """The run's reward functions from ``config.grpo.rewards`` (objects with ``type``, ``weight``
    and the type's fields); imports a ``python`` file here. Raises UserInputError for a missing
    file or function, or an invalid regular expression."""
    out: list[Reward] = []
    for spec in specs:
        kind = spec.type
        if kind == "matches_answer":
            fn: RewardFn = matches_answer
        elif kind == "valid_json":
            fn = valid_json
        elif kind == "regex":
            try:
                pattern = re.compile(spec.pattern or "")
            except re.error as exc:
                raise UserInputError(
                    f"invalid regular expression: {exc}", field="grpo.rewards.pattern"
                ) from exc

            def fn(prompt: str, completion: str, answer: str, _p: re.Pattern = pattern) -> float:
                return 1.0 if _p.search(completion) else 0.0

        elif kind == "length":
            low, high = spec.min or 0, spec.max if spec.max is not None else math.inf

            def fn(prompt: str, completion: str, answer: str, _lo: float = low, _hi: float = high) -> float:
                return 1.0 if _lo <= len(completion.strip()) <= _hi else 0.0

        else:
            fn = _load_python(spec.file, spec.function)
        name = spec.name or (Path(spec.file).stem if kind == "python" else kind)
        out.append(Reward(name, float(spec.weight), fn))
    return out
