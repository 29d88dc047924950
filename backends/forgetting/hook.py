"""The forgetting check during training: at eval steps (``forgetting.at_eval``) and after the last
step (``forgetting.at_end``), run on the model being trained (its adapter switched off and on, no
second copy), through the engine's optional ``forgetting_check`` (PyTorch only for now: an engine
without it is skipped with a log line naming ``tunedesk forgetting``).

``at_end: auto`` runs the quick check only when its estimated time is at most ``BUDGET`` of the
run's training time. The estimate counts forward-pass token equivalents: the prompts once
(generation prefill), ``DECODE_COST`` per generated token (one-token steps use the CPU poorly;
set so that the estimate met the measured time of SmolLM2 runs on a 2-core CPU, README
"Forgetting check"), prompts plus answers twice (teacher forcing with the
adapter off and on), the text twice; one trained token costs ~3 forward tokens (forward and
backward), so the rate is 3x the run's trained tokens per second.
"""

from __future__ import annotations

import math
from typing import Any

from backends.events import EventSink
from backends.forgetting.check import CheckInputs, eos_ids, prepare, record
from backends.forgetting.probes import QUICK
from backends.runs import RunDir

BUDGET = 0.10
DECODE_COST = 5.0


def estimated_seconds(inputs: CheckInputs, train_tokens: int, train_seconds: float) -> float:
    """The quick check's estimated time (see the module docstring); inf without a rate."""
    if train_tokens <= 0 or train_seconds <= 0:
        return math.inf
    answers = len(inputs.prompts) * inputs.size.max_new_tokens
    units = inputs.prompt_tokens * 3 + answers * (DECODE_COST + 2) + 2 * len(inputs.text_ids)
    return units / (3 * train_tokens / train_seconds)


class ForgettingHook:
    """Runs the quick check for ``TrainingLoop`` (``config.forgetting`` says when).

    ``engine``: the training engine; ``tokenizer`` and ``renderer``: the run's (a
    ``PromptRenderer`` of its recorded spec, so probes are rendered as chat will render them; None
    when the run has no chat template: no check).
    """

    def __init__(self, engine: Any, config: Any, tokenizer: Any, renderer: Any) -> None:
        self.engine = engine
        self.config = config
        self.tokenizer = tokenizer
        self.renderer = renderer
        self._inputs: CheckInputs | None = None

    @property
    def supported(self) -> bool:
        return hasattr(self.engine, "forgetting_check") and self.renderer is not None

    def _prepare(self) -> CheckInputs:
        if self._inputs is None:
            self._inputs = prepare(self.tokenizer, self.renderer, QUICK, self.config.forgetting.probes)
        return self._inputs

    def _run(self, step: int) -> Any:
        inputs = self._prepare()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        result = self.engine.forgetting_check(
            inputs.prompts,
            inputs.text_ids,
            max_new_tokens=inputs.size.max_new_tokens,
            eos=eos_ids(tok),
            pad=int(pad or 0),
            size=inputs.size.name,
        )
        result.step = step
        return result

    def at_eval(self, step: int, sink: EventSink) -> None:
        """After an evaluation, when ``forgetting.at_eval``: the ``forgetting`` event of this step."""
        if not self.config.forgetting.at_eval or not self.supported:
            return
        try:
            result = self._run(step)
        except Exception as exc:  # a failed check must not fail the run
            sink.emit("log", level="warning", message=f"forgetting check failed: {type(exc).__name__}: {exc}")
            return
        sink.emit("forgetting", **result.fields(with_answers=False))

    def at_end(self, run: RunDir, sink: EventSink, *, step: int, tokens: int, elapsed: float) -> None:
        """After the last step (adapter saved): the check, recorded in the run folder, when
        ``forgetting.at_end`` is true, or ``auto`` and it costs little; else a log line saying why."""
        mode = self.config.forgetting.at_end
        command = f"`tunedesk forgetting {run.path}`"
        if mode is False:
            return
        if self.renderer is None:
            sink.emit("log", level="info", message="forgetting check: no chat template, so no probes to run")
            return
        if not self.supported:
            sink.emit(
                "log",
                level="info",
                message=f"forgetting check: not built into the {self.engine.name} backend's training; run {command}",
            )
            return
        if mode == "auto":
            estimate = estimated_seconds(self._prepare(), tokens, elapsed)
            if estimate > BUDGET * elapsed:
                sink.emit(
                    "log",
                    level="info",
                    message=f"forgetting check skipped: ~{estimate:.0f} s is more than {BUDGET:.0%} of this "
                    f"run's {elapsed:.0f} s (forgetting.at_end: true forces it); run {command}",
                )
                return
        sink.emit(
            "log", level="info", message="forgetting check: drift from the base model on general probes"
        )
        try:
            result = self._run(step)
        except Exception as exc:  # the run itself succeeded; a failed check must not fail it
            sink.emit("log", level="warning", message=f"forgetting check failed: {type(exc).__name__}: {exc}")
            return
        event = record(run, result, sink, self.config)
        if event["verdict"] == "large":
            tips = "; ".join(event.get("advice") or [])
            sink.emit(
                "log",
                level="warning",
                message=f"the tuning changed the model's general answers a lot (drift {event['score']:.2f}); "
                f"to keep more of them try: {tips}",
            )
