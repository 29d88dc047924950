"""The training loop's validation passes and DPO reference log-probabilities: batches of the
validation split, the precomputed reference attached to batches, one validation pass honouring
stop requests between batches. A mixin of ``backends.training.loop.TrainingLoop``."""

from __future__ import annotations

import math
import time

from backends.data.types import Batch, PreferenceBatch
from backends.errors import RunFailed
from backends.events import optional_fields

WEIGHT = "_weight"  # the summed weights travel with the summed metrics between processes


class Evaluation:
    """Validation and the DPO reference for ``TrainingLoop``."""

    def _with_reference(self, split: str, batches: list[Batch]) -> list[Batch]:
        """Attach the precomputed reference log-probabilities (DPO with precomputation) to the
        batches of ``split``; other batches pass through unchanged."""
        if self.reference is not None and self.reference.has(split):
            for batch in batches:
                if isinstance(batch, PreferenceBatch):
                    self.reference.attach(split, batch)
        return batches

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

    def _evaluate(self) -> float:
        """One validation pass, a batch at a time so that a stop request (signal or stop file)
        is honoured between batches: the run then stops with a checkpoint of the current step.
        Per-batch metrics are combined as the engine would over all batches: SFT ``val_loss``
        weighted by label tokens, DPO metrics by pairs; on several processes each evaluates its
        share of every batch and the weighted sums are added up over them."""
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
            batch = self._share([batch])[0]  # on several processes: this one's rows of it
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
        if self.world.size > 1:
            sums = self.world.sum({**sums, WEIGHT: weight_total})
            weight_total = sums.pop(WEIGHT)
        means = {k: v / weight_total for k, v in sums.items()} if weight_total else {}
        val = means.get("val_loss", float("nan"))
        self.state.val_loss = val if math.isfinite(val) else None
        extra = optional_fields("eval", means)
        self.sink.emit("eval", step=self.state.step, val_loss=val, **extra)
        if self.forgetting is not None and self.world.rank == 0:
            self.forgetting.at_eval(self.state.step, self.sink)
        return val
