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

ORPO, KTO and GRPO (``backends.training.orpo``, ``kto``, ``grpo``) run the same way: their engines
return the methods' own figures, which ``step`` and ``eval`` events carry (``events.OPTIONAL``,
``events.optional_fields``). DPO (``method: dpo``, see ``backends.training.dpo``) runs through this same loop: the batcher is
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

The forgetting check (``backends.forgetting.hook``, optional ``forgetting`` argument) runs after
each evaluation (``forgetting.at_eval``) and after the adapter is saved, before ``run_finished``
(``forgetting.at_end``), emitting ``forgetting`` events.

``events.jsonl`` is append-only: a resumed run appends a new ``run_started`` and replays the steps
after its checkpoint, so a run killed after step N+k and resumed from step N holds steps N+1..N+k
twice; readers keep the last event of each step.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.config import RunConfig
from backends.data.shard import shard_batch
from backends.data.types import Batch, PreparedData
from backends.durable import clean_leftovers
from backends.errors import RunFailed, RunStopped, UserInputError
from backends.events import EventSink, optional_fields
from backends.runs import RunDir, atomic_dir, atomic_write_text
from backends.training.checkpoints import Checkpoints
from backends.training.distributed import world_of
from backends.training.divergence import HINT as DIVERGED_HINT
from backends.training.divergence import DivergenceMonitor
from backends.training.dpo import ReferenceCache
from backends.training.engine import Engine
from backends.training.evaluation import Evaluation
from backends.training.measure import measured_peak
from backends.training.schedule import learning_rate, warmup_steps
from backends.training.state import STATE_FILE as STATE_FILE  # re-exported: tests, tools
from backends.training.state import LoopState, data_fingerprint, rss_bytes
from backends.training.state import stop_on_signals as stop_on_signals  # re-exported: jobs.train

# Creating this file in the run folder asks the loop to stop after the current step, as SIGTERM
# does: the way to stop a worker where signals cannot be sent to it (Windows).
STOP_FILE = "stop.request"
RECENT_LOSSES = 10  # run_finished.train_loss is the mean loss of the last this-many steps

NAN_HINT = (
    "lower training.learning_rate (e.g. by 10x), keep training.max_grad_norm at 1.0, "
    "or check the data for extremely long or broken rows"
)

Batcher = Callable[..., list[Batch]]


class TrainingLoop(Checkpoints, Evaluation):
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
        forgetting: Any = None,
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
        self.forgetting = forgetting  # backends.forgetting.hook.ForgettingHook, or None
        self.state = LoopState()
        self.world = world_of(engine)  # several processes (--nproc): backends.training.distributed
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

    def _epoch_progress(self) -> float:
        n = len(self._batches(self.state.epoch))
        return self.state.epoch + self.state.batch_index / n

    def _make_batches(self, examples: list, *, epoch: int = 0, packing: bool = False) -> list[Batch]:
        """``examples`` in the run's global batch size (``training.batch_size`` x processes) and
        order for ``epoch`` (the batcher's seeded order); the defaults (epoch 0, unpacked) are for
        validation and the DPO reference precomputation. Each process trains on its share of every
        batch (``_share``)."""
        t = self.config.training
        return self.batcher(
            examples,
            batch_size=t.batch_size * self.world.size,
            pad_token_id=self.pad_token_id,
            seed=t.seed,
            epoch=epoch,
            packing=packing,
            max_seq_length=t.max_seq_length,
        )

    def _share(self, batches: list[Batch]) -> list[Batch]:
        """This process's rows of each global micro-batch (``backends.data.shard``)."""
        return [shard_batch(b, self.world.rank, self.world.size) for b in batches]

    def _stop_requested(self) -> bool:
        """A stop was asked: by a signal (or the caller's event), or by a stop file in the run
        folder; on several processes, on any of them (every process must call this at the same
        points: it is a collective there)."""
        return self.world.any(self.stop.is_set() or (self.run.path / STOP_FILE).exists())

    @property
    def writer(self) -> bool:
        """This process writes the run folder (rank 0 of several; always on one process)."""
        return self.world.rank == 0

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
        if self.writer:
            self.run.prune_checkpoints(self.config.training.keep_checkpoints)  # and stale temp folders
            clean_leftovers(self.run.path, ("adapter",))  # of a final save that was killed
            with contextlib.suppress(FileNotFoundError):
                (self.run.path / STOP_FILE).unlink()  # a stop request of an earlier session
        self.world.barrier()  # no process sees the old stop file
        if resume_from is not None:
            self.restore(resume_from)
            resumed_from = self.state.step
        self.state.max_steps = self.max_steps
        self.state.data_fingerprint = self.fingerprint
        self.state.world_size = self.world.size
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
                result = self.engine.train_step(self._share(micro), lr)
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
                **optional_fields("step", result),
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

    def _stop(self) -> None:
        path = self.run.checkpoints_dir / f"step-{self.state.step}"
        # Rank 0 decides (it writes the checkpoints); saving is a collective on several processes.
        if self.world.broadcast(self._last_checkpoint_step != self.state.step or not path.is_dir()):
            path = self.save_checkpoint()
        self.sink.emit("stopped", step=self.state.step, checkpoint=str(path))
        if self.writer:
            with contextlib.suppress(FileNotFoundError):
                (self.run.path / STOP_FILE).unlink()
        raise RunStopped(
            f"stopped at step {self.state.step}; resume with `tunedesk train --resume {self.run.path}`"
        )

    def _finish(self) -> dict[str, Any]:
        s = self.state
        self._gather_engine_state()
        if self.writer:
            self._save_adapter()
            if self.forgetting is not None:
                self.forgetting.at_end(self.run, self.sink, step=s.step, tokens=s.tokens, elapsed=s.elapsed)
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

    def _save_adapter(self) -> None:
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
