"""The framework-neutral training loop shared by every backend.

``TrainingLoop`` drives an ``Engine`` (``backends.training.engine``) through one run: the step and
epoch count, data order and resume position, the learning-rate schedule, evaluation cadence,
checkpoints (atomic, rotated), events, ETA, cooperative stop, NaN/inf detection and the final
adapter folder. It imports no ML framework, so the MLX backend uses it unchanged.

Step accounting: an optimizer step takes ``gradient_accumulation_steps`` micro-batches from the
current epoch's batch list (``make_batches`` with the run's seed and the epoch number, so the order
is reproducible); the last step of an epoch takes what is left. ``max_steps`` overrides
``epochs``. The resume position is (epoch, index of the next micro-batch), saved with every
checkpoint together with the step, token count, elapsed time, recent losses and the Python and
NumPy RNG states (framework RNG is the engine's). Resuming from ``checkpoints/step-N`` therefore
replays steps N+1... exactly as an uninterrupted run would.

Event fields written here beyond the design's required ones: ``step.tokens`` is the cumulative
number of non-padding tokens trained so far (``step.step_tokens`` those of this step), ``epoch``
is fractional (epochs completed), ``elapsed`` counts training time of all segments of a resumed
run, ``eta`` is seconds left at this session's average step time. ``run_started`` adds
``precision``, ``resumed_from`` (the checkpoint step, None for a fresh start), ``train_examples``,
``validation_examples``, ``steps_per_epoch``, ``warmup_steps`` and ``memory_plan`` (the
``backends.plan`` prediction, or None); ``run_finished`` adds ``tokens``, ``elapsed`` and
``memory_peak`` (bytes measured since the model was loaded, ``backends.training.measure``); ``run_failed.step`` and ``stopped.step`` are the last completed step.

DPO (``method: dpo``, see ``backends.training.dpo``) runs through this same loop: the batcher is
``make_preference_batches``, the engine's ``train_step`` returns the DPO loss per pair and the
reward statistics, which ``step`` events carry (``dpo.STEP_FIELDS``), and ``eval`` events add
``reward_accuracy`` and ``reward_margin`` (from the engine's ``eval_metrics``). With
``dpo.precompute_ref_log_probs`` the loop has the engine compute the reference log-probabilities
of every training and validation pair once before the first step (``dpo.ReferenceCache``), hands
them to the engine on the batches, and keeps them in every checkpoint, so a resume reuses them.

Failures besides NaN: a loss that diverges (``backends.training.divergence``: back at the
uniform guess ln(vocabulary), or far above its start, for 10 steps) is ``run_failed`` kind
``diverged`` and the checkpoints taken while it diverged are removed; a checkpoint or adapter
write that finds the disk full is kind ``disk`` (the free and needed bytes in the message).
A resumed run first removes a killed final save's ``.tmp-adapter-*`` / ``.old-adapter-*``.

``events.jsonl`` is append-only: a resumed run appends a new ``run_started`` and replays the steps
after its checkpoint, so a run killed after step N+k and resumed from step N holds steps N+1..N+k
twice; readers keep the last event of each step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from backends.config import RunConfig, dump_config
from backends.data.types import Batch, PreferenceBatch, PreferenceExample, PreparedData
from backends.durable import clean_leftovers, disk_full_message, folder_bytes, is_disk_full
from backends.errors import RunFailed, RunStopped, UserInputError
from backends.events import EventSink
from backends.runs import RunDir, atomic_dir, atomic_write_text
from backends.training.divergence import HINT as DIVERGED_HINT
from backends.training.divergence import DivergenceMonitor
from backends.training.dpo import EVAL_FIELDS, STEP_FIELDS, ReferenceCache
from backends.training.engine import Engine
from backends.training.measure import measured_peak
from backends.training.schedule import learning_rate, warmup_steps

STATE_FILE = "trainer_state.json"
# Creating this file in the run folder asks the loop to stop after the current step, as SIGTERM
# does: the way to stop a worker where signals cannot be sent to it (Windows).
STOP_FILE = "stop.request"
RECENT_LOSSES = 10  # run_finished.train_loss is the mean loss of the last this-many steps

NAN_HINT = (
    "lower training.learning_rate (e.g. by 10x), keep training.max_grad_norm at 1.0, "
    "or check the data for extremely long or broken rows"
)

DISK_HINT = (
    "free space on that disk (or set output.runs_dir to a disk with room), then resume with "
    "`tunedesk train --resume RUN_DIR`; fewer checkpoints (training.keep_checkpoints) need less space"
)

Batcher = Callable[..., list[Batch]]


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
    the prompt, chosen and rejected ids and the row), to notice a data file that changed between a
    checkpoint and its resume."""
    h = hashlib.sha256()
    for ex in examples:
        if isinstance(ex, PreferenceExample):
            for part in (ex.prompt_ids, ex.chosen_ids, ex.rejected_ids, [ex.row]):
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


class TrainingLoop:
    """One run of an engine that is already ``setup`` (see module docstring).

    ``data``: the prepared SFT data (``train`` must be non-empty). ``batcher``: the data
    pipeline's ``make_batches`` (injectable for tests). ``stop``: set it (or send SIGINT/SIGTERM
    while ``stop_on_signals`` is active) to checkpoint and stop after the current step.
    ``adapter_info``: extra fields for ``tunedesk.json`` (base model name and path, ...).
    A file named ``STOP_FILE`` appearing in the run folder stops the run like ``stop``.
    """

    def __init__(
        self,
        engine: Engine,
        config: RunConfig,
        data: PreparedData,
        run: RunDir,
        sink: EventSink,
        *,
        setup_info: dict[str, Any],
        adapter_info: dict[str, Any],
        batcher: Batcher,
        stop: threading.Event | None = None,
        pad_token_id: int = 0,
        vocab_size: int | None = None,
    ) -> None:
        if not data.train:
            raise UserInputError("no training examples", field="data.train_file")
        self.engine = engine
        self.config = config
        self.data = data
        self.run = run
        self.sink = sink
        self.setup_info = setup_info
        self.adapter_info = adapter_info
        self.batcher = batcher
        self.stop = stop or threading.Event()
        self.pad_token_id = pad_token_id
        self.state = LoopState()
        self.vocab_size = vocab_size
        self.divergence = DivergenceMonitor(vocab_size)
        self._epoch_cache: tuple[int, list[Batch]] | None = None
        self._val_batches: list[Batch] | None = None
        t = config.training
        self.accum = t.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(len(self._batches(0)) / self.accum)
        self.max_steps = t.max_steps or max(1, math.ceil(t.epochs * self.steps_per_epoch))
        self.warmup = warmup_steps(self.max_steps, t.warmup_ratio)
        self.fingerprint = data_fingerprint(data.train)
        self._last_checkpoint_step: int | None = None
        self.reference: ReferenceCache | None = (
            ReferenceCache() if config.method == "dpo" and config.dpo.precompute_ref_log_probs else None
        )
        # The precomputed reference log-probs belong to these training and validation pairs.
        self._reference_key = f"{self.fingerprint}/{data_fingerprint(data.validation or [])}"

    # --- data ------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[Batch]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            batches = self._make_batches(self.data.train, epoch=epoch, packing=self.config.data.packing)
            if not batches:
                raise UserInputError("the data pipeline produced no batches", field="data.train_file")
            self._epoch_cache = (epoch, batches)
        return self._epoch_cache[1]

    def _next_micro_batches(self) -> list[Batch]:
        """The micro-batches of the next optimizer step; advances the data position."""
        s = self.state
        batches = self._batches(s.epoch)
        if s.batch_index >= len(batches):
            s.epoch += 1
            s.batch_index = 0
            batches = self._batches(s.epoch)
        chunk = batches[s.batch_index : s.batch_index + self.accum]
        s.batch_index += len(chunk)
        return self._with_reference("train", chunk)

    def _with_reference(self, split: str, batches: list[Batch]) -> list[Batch]:
        """Attach the precomputed reference log-probabilities (DPO with precomputation) to the
        batches of ``split``; other batches pass through unchanged."""
        if self.reference is not None and self.reference.has(split):
            for batch in batches:
                if isinstance(batch, PreferenceBatch):
                    self.reference.attach(split, batch)
        return batches

    def _epoch_progress(self) -> float:
        n = len(self._batches(self.state.epoch))
        return self.state.epoch + self.state.batch_index / n

    def _make_batches(self, examples: list, *, epoch: int = 0, packing: bool = False) -> list[Batch]:
        """``examples`` in the run's batch size and order for ``epoch`` (the batcher's seeded
        order); the defaults (epoch 0, unpacked) are for validation and the DPO reference
        precomputation."""
        t = self.config.training
        return self.batcher(
            examples,
            batch_size=t.batch_size,
            pad_token_id=self.pad_token_id,
            seed=t.seed,
            epoch=epoch,
            packing=packing,
            max_seq_length=t.max_seq_length,
        )

    def _stop_requested(self) -> bool:
        """A stop was asked: by a signal (or the caller's event), or by a stop file in the run folder."""
        return self.stop.is_set() or (self.run.path / STOP_FILE).exists()

    def _validation_batches(self) -> list[Batch]:
        if self._val_batches is None:
            self._val_batches = self._make_batches(self.data.validation)
        return self._with_reference("validation", self._val_batches)

    def _precompute_reference(self) -> None:
        """DPO with ``precompute_ref_log_probs``: the reference log-probabilities of every training
        and validation pair, once (kept from the checkpoint on a resume). A stop request during the
        computation leaves it incomplete; the run then stops at step 0 as usual."""
        cache = self.reference
        if cache is None:
            return
        cache.fingerprint = self._reference_key
        splits = [("train", self.data.train)] + (
            [("validation", self.data.validation)] if self.data.validation else []
        )
        for split, examples in splits:
            if cache.has(split):
                continue
            start = time.monotonic()
            batches = self._make_batches(examples)
            try:
                done = cache.compute(
                    split,
                    batches,
                    self.engine.reference_log_probs,
                    self._stop_requested,
                )
            except RunFailed as exc:
                raise self._fail(exc.kind, exc.message, exc.hint) from exc
            if not done:
                return
            self._log(
                "info",
                f"reference log-probabilities of {len(examples)} {split} pairs computed in "
                f"{time.monotonic() - start:.1f} s (dpo.precompute_ref_log_probs)",
            )

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-<N>`` atomically (engine state + ``trainer_state.json``), emit
        ``checkpoint`` and keep only the newest ``keep_checkpoints``."""
        s = self.state
        s.python_rng = _python_rng_state()
        s.numpy_rng = _numpy_rng_state()
        s.divergence = self.divergence.to_dict()
        path = self.run.checkpoints_dir / f"step-{s.step}"
        with self._disk_full_is_a_failure(path):
            with self.run.new_checkpoint(s.step) as tmp:
                self.engine.save_state(tmp)
                if self.reference is not None:
                    self.reference.save(tmp)
                atomic_write_text(tmp / STATE_FILE, s.to_json())
                atomic_write_text(tmp / "config.yaml", dump_config(self.config))  # compared on resume
        self._last_checkpoint_step = s.step
        self.sink.emit("checkpoint", step=s.step, path=str(path))
        if not self.divergence.suspicious:  # keep the checkpoint from before a suspicious stretch
            self.run.prune_checkpoints(self.config.training.keep_checkpoints)
        return path

    @contextlib.contextmanager
    def _disk_full_is_a_failure(self, target: Path) -> Iterator[None]:
        """A write into ``target`` that finds the disk full fails the run with kind ``disk``
        (the temporary folder is gone, earlier checkpoints are untouched)."""
        try:
            yield
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            latest = self.run.latest_checkpoint()
            needed = folder_bytes(latest) if latest is not None else None
            kept = f"; the last checkpoint ({latest}) is intact" if latest is not None else ""
            raise self._fail("disk", disk_full_message(target, needed) + kept, DISK_HINT) from exc

    def restore(self, checkpoint: Path) -> None:
        """Load engine and loop state from a complete checkpoint folder."""
        state = LoopState.from_file(checkpoint / STATE_FILE)
        self.engine.load_state(checkpoint)
        if state.python_rng is not None:
            _set_python_rng_state(state.python_rng)
        if state.numpy_rng is not None:
            _set_numpy_rng_state(state.numpy_rng)
        if state.data_fingerprint and state.data_fingerprint != self.fingerprint:
            self._log(
                "warning",
                "the training data differs from the data this run was checkpointed with; "
                "the resumed run will not replay the same batches",
            )
        self.state = state
        self.divergence = DivergenceMonitor.from_dict(state.divergence, self.vocab_size)
        self._last_checkpoint_step = state.step
        if self.reference is not None and self.reference.load(checkpoint, self._reference_key):
            self._log("info", "reference log-probabilities restored from the checkpoint")

    # --- events ----------------------------------------------------------------------------
    def _log(self, level: str, message: str) -> None:
        self.sink.emit("log", level=level, message=message)

    def _fail(self, kind: str, message: str, hint: str) -> RunFailed:
        if kind == "oom":
            from backends.plan import target_for
            from backends.training.oom import plan_hint

            model_dir = (self.adapter_info.get("base_model") or {}).get("path")
            extra = plan_hint(self.config, model_dir, target_for(self.engine.name, self.engine.device))
            hint = f"{extra}; or {hint}" if extra else hint
        self.sink.emit("run_failed", step=self.state.step, kind=kind, message=message, hint=hint)
        return RunFailed(kind, message, hint)

    # --- the run ---------------------------------------------------------------------------
    def run_loop(self, resume_from: Path | None = None) -> dict[str, Any]:
        """Train to ``max_steps``; returns the ``run_finished`` event.

        Raises RunStopped after a stop (checkpoint saved, ``stopped`` emitted), RunFailed after
        a NaN/inf loss (kind nan), out of memory (kind oom) or any crash (kind crash), each with
        ``run_failed`` emitted and earlier checkpoints kept.
        """
        resumed_from = None
        self.run.prune_checkpoints(self.config.training.keep_checkpoints)  # and stale temp folders
        clean_leftovers(self.run.path, ("adapter",))  # of a final save that was killed
        with contextlib.suppress(FileNotFoundError):
            (self.run.path / STOP_FILE).unlink()  # a stop request of an earlier session
        if resume_from is not None:
            self.restore(resume_from)
            resumed_from = self.state.step
        self.state.max_steps = self.max_steps
        self.state.data_fingerprint = self.fingerprint
        if hasattr(self.engine, "reset_peak_memory"):
            self.engine.reset_peak_memory()  # memory_peak is the training phase's (measure.py)
        self.sink.emit(
            "run_started",
            run_dir=str(self.run.path),
            backend=self.engine.name,
            device=self.engine.device,
            model=self.config.model,
            method=self.config.method,
            params_total=int(self.setup_info["params_total"]),
            params_trainable=int(self.setup_info["params_trainable"]),
            max_steps=self.max_steps,
            precision=self.engine.precision,
            resumed_from=resumed_from,
            train_examples=len(self.data.train),
            validation_examples=len(self.data.validation or []),
            steps_per_epoch=self.steps_per_epoch,
            warmup_steps=self.warmup,
            memory_plan=self.setup_info.get("memory_plan"),
        )
        for note in self.setup_info.get("notes") or []:
            self._log("info", note)
        try:
            self._precompute_reference()
            return self._train()
        except (RunFailed, RunStopped):
            raise
        except KeyboardInterrupt:
            # A second Ctrl-C while a step or checkpoint was running: stop without a new checkpoint.
            latest = self.run.latest_checkpoint()
            self.sink.emit("stopped", step=self.state.step, checkpoint=str(latest) if latest else None)
            raise RunStopped("interrupted; resume from the last checkpoint") from None
        except UserInputError as exc:
            kind = "data" if (exc.field or "").startswith("data") else "model"
            self.sink.emit(
                "run_failed", step=self.state.step, kind=kind, message=str(exc), hint=exc.hint or ""
            )
            raise
        except Exception as exc:
            with contextlib.suppress(OSError), open(self.run.log_path, "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            raise self._fail(
                "crash", f"{type(exc).__name__}: {exc}", "see log.txt in the run folder for the traceback"
            ) from exc

    def _train(self) -> dict[str, Any]:
        t = self.config.training
        s = self.state
        session_start = time.monotonic()
        session_steps = 0
        elapsed_before = s.elapsed
        while s.step < self.max_steps:
            if self._stop_requested():
                self._stop()
            micro = self._next_micro_batches()
            lr = learning_rate(
                s.step,
                peak=t.learning_rate,
                total_steps=self.max_steps,
                warmup=self.warmup,
                kind=t.lr_scheduler,
            )
            step_start = time.monotonic()
            try:
                result = self.engine.train_step(micro, lr)
            except RunFailed as exc:
                raise self._fail(exc.kind, exc.message, exc.hint) from exc
            step_time = max(time.monotonic() - step_start, 1e-9)
            loss, grad_norm = float(result["loss"]), float(result["grad_norm"])
            skipped = bool(result.get("skipped"))
            if not math.isfinite(loss) or (not math.isfinite(grad_norm) and not skipped):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                raise self._fail(
                    "nan",
                    f"the {what} became {loss if what == 'loss' else grad_norm} at step {s.step + 1}; "
                    "the run stopped there (the weights were not updated with it)",
                    NAN_HINT,
                )
            step_tokens = sum(int(b.num_tokens) for b in micro)
            s.step += 1
            s.tokens += step_tokens
            s.recent_losses = (s.recent_losses + [loss])[-RECENT_LOSSES:]
            session_steps += 1
            now = time.monotonic()
            s.elapsed = elapsed_before + (now - session_start)
            per_step = (now - session_start) / session_steps
            self.sink.emit(
                "step",
                step=s.step,
                epoch=round(self._epoch_progress(), 4),
                loss=loss,
                learning_rate=lr,
                grad_norm=grad_norm,
                tokens=s.tokens,
                step_tokens=step_tokens,
                tokens_per_second=step_tokens / step_time,
                elapsed=round(s.elapsed, 3),
                eta=round(per_step * (self.max_steps - s.step), 1),
                memory={"rss": rss_bytes(), **self.engine.memory()},
                **({"skipped": True} if skipped else {}),
                **{k: float(result[k]) for k in STEP_FIELDS if k in result},
            )
            diverged = self.divergence.observe(s.step, loss, grad_norm)
            if diverged:
                raise self._fail("diverged", diverged + self._drop_diverged_checkpoints(), DIVERGED_HINT)
            if (
                self.data.validation
                and t.eval_every
                and s.step % t.eval_every == 0
                and s.step < self.max_steps
            ):
                self._evaluate()
            if t.save_every and s.step % t.save_every == 0 and s.step < self.max_steps:
                self.save_checkpoint()
        if self.data.validation:
            self._evaluate()  # the final evaluation (the loop above leaves out the last step)
        return self._finish()

    def _drop_diverged_checkpoints(self) -> str:
        """Remove the checkpoints taken while the loss was already diverging, so the newest one
        (what ``--resume`` and the message name) is the last good one; returns that in words."""
        first_bad = self.divergence.window_start_step
        for step, path in self.run.checkpoints():
            if first_bad is not None and step >= first_bad:
                shutil.rmtree(path, ignore_errors=True)
        latest = self.run.latest_checkpoint()
        return (
            f"; the last good checkpoint is {latest}" if latest is not None else "; no checkpoint before it"
        )

    def _evaluate(self) -> float:
        """One validation pass, a batch at a time so that a stop request (signal or stop file)
        is honoured between batches: the run then stops with a checkpoint of the current step.
        Per-batch metrics are combined as the engine would over all batches: SFT ``val_loss``
        weighted by label tokens, DPO metrics by pairs."""
        batches = self._validation_batches()
        # Say so: on a slow CPU a validation pass can take minutes with no step events.
        self.sink.emit(
            "log",
            level="info",
            message=f"validation at step {self.state.step}: {len(batches)} batches of "
            f"{len(self.data.validation or [])} rows",
        )
        sums: dict[str, float] = {}
        weight_total = 0.0
        for batch in batches:
            if self._stop_requested():
                self._stop()
            weight = float(batch.num_pairs if isinstance(batch, PreferenceBatch) else batch.num_label_tokens)
            if weight <= 0:
                continue
            try:
                metrics = self.engine.eval_metrics([batch])
            except RunFailed as exc:
                raise self._fail(exc.kind, exc.message, exc.hint) from exc
            weight_total += weight
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + weight * float(value)
        means = {k: v / weight_total for k, v in sums.items()} if weight_total else {}
        val = means.get("val_loss", float("nan"))
        self.state.val_loss = val if math.isfinite(val) else None
        extra = {k: means[k] for k in EVAL_FIELDS if k in means}
        self.sink.emit("eval", step=self.state.step, val_loss=val, **extra)
        return val

    def _stop(self) -> None:
        path = self.run.checkpoints_dir / f"step-{self.state.step}"
        if self._last_checkpoint_step != self.state.step or not path.is_dir():
            path = self.save_checkpoint()
        self.sink.emit("stopped", step=self.state.step, checkpoint=str(path))
        with contextlib.suppress(FileNotFoundError):
            (self.run.path / STOP_FILE).unlink()
        raise RunStopped(
            f"stopped at step {self.state.step}; resume with `tunedesk train --resume {self.run.path}`"
        )

    def _finish(self) -> dict[str, Any]:
        s = self.state
        with self._disk_full_is_a_failure(self.run.adapter_dir), atomic_dir(self.run.adapter_dir) as tmp:
            self.engine.save_adapter(tmp)
            if self.data.chat_template:
                atomic_write_text(tmp / "chat_template.jinja", self.data.chat_template)
            info = {
                **self.adapter_info,
                "backend": self.engine.name,
                "method": self.config.method,
                "precision": self.engine.precision,
                "steps": s.step,
                "lora": self.config.lora.model_dump(mode="json"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            atomic_write_text(tmp / "tunedesk.json", json.dumps(info, indent=2) + "\n")
        train_loss = sum(s.recent_losses) / len(s.recent_losses) if s.recent_losses else None
        return self.sink.emit(
            "run_finished",
            step=s.step,
            adapter=str(self.run.adapter_dir),
            train_loss=train_loss,
            val_loss=s.val_loss,
            tokens=s.tokens,
            elapsed=round(s.elapsed, 3),
            memory_peak=measured_peak(self.engine.memory()),
        )
