"""The versioned JSON-lines event schema shared by the training and chat workers and the GUI.

Every event is one JSON object on one line with ``"v": SCHEMA_VERSION``, ``"event"`` (its name)
and ``"time"`` (Unix seconds). Required fields per event are in ``REQUIRED`` and come from
``../shared/design.md``; times are seconds, memory is bytes. Extra fields are allowed; the
documented optional ones are in ``OPTIONAL`` (DPO, ORPO and KTO figures on ``step`` and ``eval``). Readers must
ignore unknown events and fields.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

SCHEMA_VERSION = 1

REQUIRED: dict[str, tuple[str, ...]] = {
    "run_started": (
        "run_dir",
        "backend",
        "device",
        "model",
        "method",
        "params_total",
        "params_trainable",
        "max_steps",
    ),
    "step": (
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "grad_norm",
        "tokens",
        "tokens_per_second",
        "elapsed",
        "eta",
        "memory",
    ),
    "eval": ("step", "val_loss"),
    "checkpoint": ("step", "path"),
    "stopped": ("step", "checkpoint"),
    "run_finished": ("step", "adapter", "train_loss", "val_loss"),
    "run_failed": ("step", "kind", "message", "hint"),
    "token": ("text",),
    "reply_finished": ("tokens", "tokens_per_second", "time_to_first_token"),
    # Informational events (not in the design's required table, fields are ours).
    "log": ("level", "message"),
    # The chat worker's own events (protocol in backends/chat/worker.py): the model is loaded (and
    # which adapter is current); a command failed (kind: input, model, oom, crash) and the worker
    # goes on; the prompts of a run's validation split for "compare on validation prompts".
    "chat_ready": ("model", "backend", "device", "adapter"),
    "chat_error": ("kind", "message", "hint"),
    "validation_prompts": ("run_dir", "prompts"),
    # The forgetting check (backends/forgetting/): drift of the tuned model from its base on general
    # probes. kl_mean: mean per-token KL(base || tuned) in nats on the base model's greedy answers;
    # ppl_base/ppl_tuned: perplexity of the general text sample; answers_changed: probes whose greedy
    # answer changed; score: kl_mean + max(0, ln(ppl_tuned/ppl_base)) in nats/token; verdict: little,
    # noticeable or large. Also: probes, tokens, size (quick/full), elapsed, step (the training step,
    # null after training), advice (list of suggestions when large).
    "forgetting": ("kl_mean", "ppl_base", "ppl_tuned", "answers_changed", "score", "verdict"),
    # tunedesk export RUN_DIR --format ... --json (backends/jobs/export/run.py): stages and the result.
    "export_progress": ("stage", "done", "total"),
    "export_finished": ("path", "format", "quant", "bytes"),
    # ... or, when it fails or is stopped, its last event: kind (input, stopped, or a run_failed kind),
    # message, hint, and the exit code the command returns.
    "export_failed": ("kind", "message", "hint", "exit_code"),
    # tunedesk data check --json (backends/data/check.py), on stderr: how far reading a data file
    # is. done/total in `unit` ('bytes', or 'rows' for Parquet); rows: rows read so far.
    "data_progress": ("stage", "done", "total", "unit", "rows"),
}

# Optional fields of DPO runs (``method: dpo``; see backends/training/dpo.py for the formulas).
# ``step``: means over the step's preference pairs of the implicit rewards
#   rewards_chosen   = beta * (log pi(chosen|prompt) - log ref(chosen|prompt)),
#   rewards_rejected = the same for the rejected answer,
#   reward_margin    = rewards_chosen - rewards_rejected,
#   reward_accuracy  = share of pairs with chosen reward > rejected reward (0..1);
# ``step.loss`` is then the DPO loss per pair. ``eval``: ``val_loss`` is the DPO loss on the
# validation pairs, plus reward_accuracy and reward_margin over them.
DPO_STEP_FIELDS = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy")
DPO_EVAL_FIELDS = ("reward_accuracy", "reward_margin")
# Memory (``backends.plan``, ``backends.training.measure``; bytes):
# ``run_started.memory_plan``: the plan's prediction, an object with ``target`` (torch-cpu |
#   torch-cuda | mlx), ``peak`` (predicted peak bytes of the measured quantity below), ``reserve``
#   (needed beside it: CUDA context, the Python process beside MLX), ``available`` (free bytes),
#   ``verdict`` (fits | tight | does_not_fit), ``breakdown`` (bytes by part: weights, lora,
#   gradients, optimizer, activations, logits, overhead; kv_cache_chat and weights_chat for chat),
#   ``chat_peak``, ``settings`` (precision, batch_size, max_seq_length, gradient_checkpointing,
#   quantize, params) and ``suggestions`` (``changes``, ``peak``, ``verdict``, ``label``); null when
#   the model's config.json cannot be planned.
# ``run_finished.memory_peak``: the measured peak since the model was loaded: RSS on the CPU,
#   torch.cuda.max_memory_allocated on CUDA, mx.get_peak_memory on MLX.
MEMORY_FIELDS_RUN = {"run_started": ("memory_plan",), "run_finished": ("memory_peak",)}
# ORPO runs (``method: orpo``; backends/training/orpo.py): ``step.loss`` is NLL + beta * odds-ratio
# loss; ``nll_loss`` the chosen answers' NLL per token, ``log_odds_ratio`` the mean
# log sigmoid(log odds(chosen) - log odds(rejected)), ``log_odds_chosen`` the mean of that log odds
# ratio; the reward fields above with rewards = beta * mean answer log-probability (no reference).
ORPO_STEP_FIELDS = ("nll_loss", "log_odds_ratio", "log_odds_chosen", *DPO_STEP_FIELDS)
# KTO runs (``method: kto``; backends/training/kto.py): ``rewards_desirable`` / ``rewards_undesirable``
# the mean beta * (log pi - log ref) of the step's desirable (label true) and undesirable rows
# (absent when the step has none), ``kl`` the batch KL estimate z0 (>= 0), ``desirable_share`` the
# share of desirable rows. ``eval`` adds ``kl`` and the two reward means.
KTO_STEP_FIELDS = ("rewards_desirable", "rewards_undesirable", "kl", "desirable_share")
KTO_EVAL_FIELDS = ("rewards_desirable", "rewards_undesirable", "kl")
# GRPO runs (``method: grpo``; backends/training/grpo.py): ``reward_mean``/``reward_std`` of the
# total reward over the step's sampled completions, ``reward_mean/<name>``/``reward_std/<name>`` per
# reward function (``OPTIONAL_PREFIXES``), ``completion_length`` (mean tokens), ``kl`` (mean per-token
# KL to the base model) and ``clip_fraction`` (share of clipped tokens). ``eval``: ``reward_mean``
# of one completion per validation prompt, and ``val_loss`` = minus that mean.
GRPO_STEP_FIELDS = ("reward_mean", "reward_std", "completion_length", "kl", "clip_fraction")
OPTIONAL_PREFIXES = ("reward_mean/", "reward_std/")
OPTIONAL: dict[str, tuple[str, ...]] = {
    "step": tuple(dict.fromkeys((*ORPO_STEP_FIELDS, *KTO_STEP_FIELDS, *GRPO_STEP_FIELDS))),
    "eval": tuple(dict.fromkeys((*DPO_EVAL_FIELDS, "log_odds_chosen", *KTO_EVAL_FIELDS, "reward_mean"))),
    **MEMORY_FIELDS_RUN,
}


def optional_fields(event: str, values: dict[str, Any]) -> dict[str, float]:
    """The documented optional fields of ``event`` found in ``values`` (as floats): names in
    ``OPTIONAL[event]`` and, for ``step``, names starting with one of ``OPTIONAL_PREFIXES``."""
    names = OPTIONAL.get(event, ())
    return {
        k: float(v)
        for k, v in values.items()
        if k in names or (event == "step" and k.startswith(OPTIONAL_PREFIXES))
    }


MEMORY_FIELDS = ("rss", "device_allocated", "device_peak")
FAILURE_KINDS = ("nan", "diverged", "oom", "disk", "data", "model", "crash")


class EventSchemaError(ValueError):
    """An event lacks a required field or has an unknown name."""


def _clean(value: Any) -> Any:
    # JSON has no NaN/Infinity: write them as null so every reader can parse the line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def make_event(name: str, /, **fields: Any) -> dict[str, Any]:
    """Build one event dict, checking its required fields.

    Raises EventSchemaError for an unknown event name or a missing required field, or a ``step``
    event whose ``memory`` lacks ``rss``/``device_allocated``/``device_peak``.
    """
    if name not in REQUIRED:
        raise EventSchemaError(f"unknown event {name!r}")
    missing = [f for f in REQUIRED[name] if f not in fields]
    if missing:
        raise EventSchemaError(f"event {name!r} lacks required field(s): {', '.join(missing)}")
    if name == "step":
        mem = fields["memory"]
        if not isinstance(mem, dict) or any(k not in mem for k in MEMORY_FIELDS):
            raise EventSchemaError(
                "step.memory must have rss, device_allocated and device_peak (null where unknown)"
            )
    if name == "run_failed" and fields["kind"] not in FAILURE_KINDS:
        raise EventSchemaError(f"run_failed.kind must be one of {FAILURE_KINDS}")
    event = {"v": SCHEMA_VERSION, "event": name, "time": round(time.time(), 3)}
    event.update(_clean(fields))
    return event


def encode(event: dict[str, Any]) -> str:
    """One event as a single JSON line (no trailing newline)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def parse_line(line: str) -> dict[str, Any] | None:
    """Parse one line; None for a blank, partial or non-event line (e.g. a library's stray print)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "event" not in obj or "v" not in obj:
        return None
    return obj


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events of an ``events.jsonl`` file; a torn last line (killed writer) is skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [e for e in (parse_line(line) for line in fh) if e is not None]
    except FileNotFoundError:
        return []


def iter_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events from an iterator of lines (e.g. a child process's stdout), skipping non-events."""
    for line in lines:
        event = parse_line(line)
        if event is not None:
            yield event


class EventSink:
    """Writes events to ``events.jsonl`` (appended, flushed and fsynced per line) and listeners.

    ``stdout``: also print each event as a JSON line there (the ``--json`` mode the GUI reads).
    ``listeners``: callables given each event dict (e.g. a progress bar).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        stdout: TextIO | None = None,
        listeners: list[Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._fh = open(self.path, "a", encoding="utf-8") if self.path is not None else None  # noqa: SIM115
        self._stdout = stdout
        self.listeners = list(listeners or [])

    def emit(self, name: str, /, **fields: Any) -> dict[str, Any]:
        """Build (``make_event``), write and broadcast one event; returns it."""
        event = make_event(name, **fields)
        line = encode(event)
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
            try:
                os.fsync(self._fh.fileno())
            except OSError:
                pass
        if self._stdout is not None:
            self._stdout.write(line + "\n")
            self._stdout.flush()
        for listener in self.listeners:
            listener(event)
        return event

    def close(self) -> None:
        """Close the events file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stdout_sink() -> EventSink:
    """A sink that prints events to stdout only (chat worker, ``--json``)."""
    return EventSink(None, stdout=sys.stdout)
