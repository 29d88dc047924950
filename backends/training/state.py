"""What the training loop keeps besides the engine's state: ``LoopState`` (a checkpoint's
``trainer_state.json``), the Python/NumPy RNG states, the data fingerprint, stop signals and the
process's resident memory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from backends.data.types import KTOExample, PreferenceExample, PromptExample
from backends.errors import UserInputError

STATE_FILE = "trainer_state.json"


@dataclass
class LoopState:
    """What a checkpoint records besides the engine's state (``trainer_state.json``)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # index of the epoch the next micro-batch comes from
    batch_index: int = 0  # index of the next micro-batch within that epoch
    tokens: int = 0  # non-padding tokens trained so far
    elapsed: float = 0.0  # seconds of training over all segments
    recent_losses: list[float] = field(default_factory=list)
    val_loss: float | None = None
    max_steps: int = 0
    data_fingerprint: str = ""
    python_rng: Any = None
    numpy_rng: Any = None
    divergence: dict[str, Any] | None = None  # DivergenceMonitor.to_dict()
    world_size: int = 1  # processes that trained it (--nproc); each one's own state: rank-<R>.json

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: Path) -> LoopState:
        """Read a ``trainer_state.json``; UserInputError when it is missing or broken."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise UserInputError(f"checkpoint state unreadable: {exc}", file=path) from None


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_rng_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def _numpy_rng_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_numpy_rng_state(state: list[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def data_fingerprint(examples: list) -> str:
    """A short hash of the tokenised training examples (input ids and labels; for preference pairs
    the prompt, chosen and rejected ids and the row; for KTO rows and GRPO prompts their prompt, answer
    and label), to notice a data file that changed between a
    checkpoint and its resume."""
    h = hashlib.sha256()
    for ex in examples:
        if isinstance(ex, PreferenceExample | KTOExample | PromptExample):
            if isinstance(ex, PreferenceExample):
                answers = (ex.chosen_ids, ex.rejected_ids)
            elif isinstance(ex, KTOExample):
                answers = (ex.completion_ids, [int(ex.desirable)])
            else:
                answers = (ex.answer_ids,)
            for part in (ex.prompt_ids, *answers, [ex.row]):
                h.update(np.asarray(part, dtype=np.int64).tobytes())
                h.update(b",")
        else:
            h.update(np.asarray(ex.input_ids, dtype=np.int64).tobytes())
            h.update(np.asarray(ex.labels, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While active, SIGINT and SIGTERM set ``stop`` (the loop then checkpoints and stops after
    the current step); a second SIGINT raises KeyboardInterrupt at once. Only in the main thread
    (signal handlers cannot be installed elsewhere); previous handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def rss_bytes() -> int:
    """Resident set size of this process in bytes."""
    return int(psutil.Process().memory_info().rss)
