"""The training loop's checkpoints: written atomically and durably (engine state, loop state, the
config they were written with, the DPO reference cache), a full disk as a ``disk`` failure, restored
on resume, and the ones taken while a run was diverging dropped. A mixin of
``backends.training.loop.TrainingLoop`` (it uses the loop's run folder, engine, state and events)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from backends.config import dump_config
from backends.durable import disk_full_message, folder_bytes, is_disk_full
from backends.runs import atomic_write_text
from backends.training.distributed import read_rank_state, write_rank_states
from backends.training.divergence import DivergenceMonitor
from backends.training.state import (
    STATE_FILE,
    LoopState,
    _numpy_rng_state,
    _python_rng_state,
    _set_numpy_rng_state,
    _set_python_rng_state,
)

DISK_HINT = (
    "free space on that disk (or set output.runs_dir to a disk with room), then resume with "
    "`tunedesk train --resume RUN_DIR`; fewer checkpoints (training.keep_checkpoints) need less space"
)


class Checkpoints:
    """Checkpoint writing, restoring and pruning for ``TrainingLoop``."""

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-<N>`` atomically (engine state + ``trainer_state.json``), emit
        ``checkpoint`` and keep only the newest ``keep_checkpoints``. On several processes every
        one calls this at the same step: each sends its own RNG states and data position
        (``rank_state``), rank 0 writes them all as ``rank-<R>.json`` with the rest."""
        s = self.state
        s.python_rng = _python_rng_state()
        s.numpy_rng = _numpy_rng_state()
        s.divergence = self.divergence.to_dict()
        path = self.run.checkpoints_dir / f"step-{s.step}"
        ranks = self.world.gather(self.rank_state()) if self.world.size > 1 else None
        self._gather_engine_state()
        if self.world.rank != 0:
            self._last_checkpoint_step = s.step
            return path
        with self._disk_full_is_a_failure(path):
            with self.run.new_checkpoint(s.step) as tmp:
                self.engine.save_state(tmp)
                if ranks is not None:
                    write_rank_states(tmp, ranks)
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

    def _gather_engine_state(self) -> None:
        """Every process, before rank 0 writes: an engine whose state is sharded over the processes
        (FSDP) gathers it here (``engine.gather_state``, a collective; others have none)."""
        gather = getattr(self.engine, "gather_state", None)
        if gather is not None and self.world.size > 1:
            gather()

    def rank_state(self) -> dict:
        """This process's own part of a checkpoint: rank, data position, Python, NumPy and the
        engine's RNG states (``engine.rng_state()``, where the engine has it)."""
        s = self.state
        rng = getattr(self.engine, "rng_state", None)
        return {
            "rank": self.world.rank,
            "step": s.step,
            "epoch": s.epoch,
            "batch_index": s.batch_index,
            "python_rng": _python_rng_state(),
            "numpy_rng": _numpy_rng_state(),
            "engine_rng": rng() if rng is not None else None,
        }

    def restore(self, checkpoint: Path) -> None:
        """Load engine and loop state from a complete checkpoint folder; on several processes,
        each restores its own ``rank-<R>.json`` over the shared state. Raises UserInputError for a
        checkpoint of another number of processes."""
        state = LoopState.from_file(checkpoint / STATE_FILE)
        mine = read_rank_state(checkpoint, self.world.rank, self.world.size, state.world_size)
        self.engine.load_state(checkpoint)
        if mine:
            state.python_rng, state.numpy_rng = mine["python_rng"], mine["numpy_rng"]
            state.epoch, state.batch_index = mine["epoch"], mine["batch_index"]
            if mine.get("engine_rng") is not None:
                self.engine.set_rng_state(mine["engine_rng"])
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

    def _drop_diverged_checkpoints(self) -> str:
        """Remove the checkpoints taken while the loss was already diverging, so the newest one
        (what ``--resume`` and the message name) is the last good one; returns that in words."""
        first_bad = self.divergence.window_start_step
        for step, path in self.run.checkpoints() if self.world.rank == 0 else []:
            if first_bad is not None and step >= first_bad:
                shutil.rmtree(path, ignore_errors=True)
        latest = self.run.latest_checkpoint()
        return (
            f"; the last good checkpoint is {latest}" if latest is not None else "; no checkpoint before it"
        )
