"""DPO, ORPO and KTO on the MLX engine: the per-micro-batch forward passes around the
framework-neutral formulas of ``backends.training.dpo``, ``orpo`` and ``kto`` (the same formulas
the PyTorch engine calls from ``backends.torch_backend.preference_methods``).

``PreferenceSteps`` builds, for one model, the functions ``nn.value_and_grad`` differentiates
(compiled with ``mx.compile`` when the engine compiles) and runs a step or an evaluation over
micro-batches. Each objective returns the micro-batch's share of the step loss first (the value
that is differentiated), so the gradients of the micro-batches add up to the step's gradient:

- DPO: sum of the pair losses; the sum of gradients is divided by the pairs of the step.
- ORPO: -(chosen answers' summed log-probs) / answer tokens of the step's chosen rows + sum of
  beta * L_OR / pairs of the step (the two divisors are passed in as arrays).
- KTO: sum of the row losses / rows of the step. The mismatched rows (KL estimate z0) and the
  reference (matched and mismatched rows, LoRA/DoRA layers bypassed: ``adapters_bypassed``) run
  outside ``value_and_grad``, so they carry no gradient; each micro-batch has its own z0.

Log-probabilities are the summed answer-token log-probabilities in fp32 (``sequence_log_probs``),
as on PyTorch, so a first step from identical weights gives the same loss on both engines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from backends.config import RunConfig
from backends.data.types import Batch, KTOBatch, PreferenceBatch
from backends.mlx_backend.losses import adapters_bypassed, dpo_loss, sequence_log_probs
from backends.training.dpo import PreferenceStats
from backends.training.kto import KTOStats, kl_estimate, kto_loss
from backends.training.orpo import ORPOStats, answer_token_counts, odds_ratio_loss

METHODS = ("dpo", "orpo", "kto")

Inputs = Callable[[Batch], tuple[mx.array, mx.array]]


def orpo_objective(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    counts: mx.array,
    nll_scale: mx.array,
    or_scale: mx.array,
    *,
    beta: float,
) -> tuple[mx.array, ...]:
    """(this micro-batch's share of the step's ORPO loss, chosen summed log-probs [B], rejected
    mean log-probs [B], beta * L_OR [B], log_odds [B]). Rows [0, B) chosen, [B, 2B) rejected;
    ``counts`` [2B] the answer tokens of each row; ``nll_scale`` = 1 / chosen answer tokens of the
    step, ``or_scale`` = 1 / pairs of the step (``backends.training.orpo``)."""
    summed = sequence_log_probs(model, inputs, targets)
    n = summed.shape[0] // 2
    mean = summed / mx.maximum(counts, 1.0)
    or_losses, log_odds = odds_ratio_loss(mean[:n], mean[n:], beta=beta, xp=mx, log_sigmoid=nn.log_sigmoid)
    share = -summed[:n].sum() * nll_scale + or_losses.sum() * or_scale
    return share, summed[:n], mean[n:], or_losses, log_odds


def kto_objective(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    reference: mx.array,
    desirable: mx.array,
    kl: mx.array,
    scale: mx.array,
    *,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
) -> tuple[mx.array, mx.array, mx.array]:
    """(this micro-batch's share of the step's KTO loss, per-row losses [B], rewards [B]) of the
    matched rows (``inputs``/``targets`` [B, T-1]) against their ``reference`` log-probs [B], with
    ``desirable`` [B] bool, the batch's z0 ``kl`` (scalar, no gradient) and ``scale`` = 1 / rows
    of the step (``backends.training.kto.kto_loss``)."""
    policy = sequence_log_probs(model, inputs, targets)
    losses, rewards = kto_loss(
        policy,
        reference,
        desirable,
        kl,
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        xp=mx,
        sigmoid=mx.sigmoid,
    )
    return losses.sum() * scale, losses, rewards


def _bound(function: Callable[..., Any], model: nn.Module) -> Callable[..., Any]:
    """``function`` with ``model`` as its first argument (what ``mx.compile`` traces)."""

    def call(*args: Any) -> Any:
        return function(model, *args)

    return call


class PreferenceSteps:
    """DPO, ORPO and KTO steps and evaluations of one MLX model.

    ``inputs(batch)`` gives the engine's shifted ``(inputs, targets)`` [R, T-1] of a batch;
    ``reference(batch)`` DPO's reference log-probs [2B] (precomputed or with the adapter bypassed).
    """

    def __init__(
        self,
        model: nn.Module,
        config: RunConfig,
        inputs: Inputs,
        reference: Callable[[PreferenceBatch], np.ndarray],
        compiled: bool,
    ) -> None:
        self.model, self.config, self._inputs, self._reference = model, config, inputs, reference
        dpo = functools.partial(dpo_loss, beta=config.dpo.beta, label_smoothing=config.dpo.label_smoothing)
        orpo = functools.partial(orpo_objective, beta=config.orpo.beta)
        kto = functools.partial(
            kto_objective,
            beta=config.kto.beta,
            desirable_weight=config.kto.desirable_weight,
            undesirable_weight=config.kto.undesirable_weight,
        )
        steps: dict[str, Callable[..., Any]] = {}
        evals: dict[str, Callable[..., Any]] = {}
        for name, objective in (("dpo", dpo), ("orpo", orpo), ("kto", kto)):
            steps[name] = _bound(nn.value_and_grad(model, objective), model)
            evals[name] = _bound(objective, model)
        if compiled:
            state = [model.state, mx.random.state]
            steps = {k: mx.compile(f, inputs=state, outputs=state) for k, f in steps.items()}
            evals = {k: mx.compile(f, inputs=state) for k, f in evals.items()}
        self._steps, self._evals = steps, evals

    # --- per micro-batch ---------------------------------------------------------------------
    def _dpo(self, batch: PreferenceBatch, train: bool, stats: PreferenceStats) -> Any:
        inputs, targets = self._inputs(batch)
        reference = mx.array(self._reference(batch), dtype=mx.float32)
        args = (inputs, targets, reference)
        if train:
            (_, losses, chosen, rejected), grads = self._steps["dpo"](*args)
        else:
            (_, losses, chosen, rejected), grads = self._evals["dpo"](*args), None
        mx.eval(losses, chosen, rejected)
        stats.add(np.array(losses), np.array(chosen), np.array(rejected))
        return grads

    def _orpo(self, batch: PreferenceBatch, train: bool, stats: ORPOStats, tokens: int, pairs: int) -> Any:
        inputs, targets = self._inputs(batch)
        counts = answer_token_counts(batch.labels)
        scales = (mx.array(1.0 / max(tokens, 1)), mx.array(1.0 / max(pairs, 1)))
        args = (inputs, targets, mx.array(counts, dtype=mx.float32), *scales)
        if train:
            (_, *terms), grads = self._steps["orpo"](*args)
        else:
            (_, *terms), grads = self._evals["orpo"](*args), None
        mx.eval(*terms)
        chosen_sum, rejected_mean, or_losses, log_odds = (np.array(t) for t in terms)
        stats.add(chosen_sum, counts[: batch.num_pairs], rejected_mean, or_losses, log_odds)
        return grads

    def _kto(self, batch: KTOBatch, train: bool, stats: KTOStats, rows: int) -> Any:
        inputs, targets = self._inputs(batch)
        n = batch.num_pairs
        matched, mismatched = (inputs[:n], targets[:n]), (inputs[n:], targets[n:])
        policy_kl = sequence_log_probs(self.model, *mismatched)
        with adapters_bypassed(self.model):
            reference = sequence_log_probs(self.model, *matched)
            reference_kl = sequence_log_probs(self.model, *mismatched)
        mx.eval(policy_kl, reference, reference_kl)
        kl = kl_estimate(np.array(policy_kl), np.array(reference_kl))
        desirable = np.asarray(batch.desirable, dtype=bool)
        args = (*matched, reference, mx.array(desirable), mx.array(kl), mx.array(1.0 / max(rows, 1)))
        if train:
            (_, losses, rewards), grads = self._steps["kto"](*args)
        else:
            (_, losses, rewards), grads = self._evals["kto"](*args), None
        mx.eval(losses, rewards)
        stats.add(np.array(losses), np.array(rewards), desirable, kl)
        return grads

    # --- step and evaluation -----------------------------------------------------------------
    def _run(self, batches: list[Batch], train: bool) -> tuple[Any, Any]:
        method = self.config.method
        grads = None

        def add(g: Any) -> None:
            nonlocal grads
            grads = g if grads is None or g is None else tree_map(mx.add, grads, g)
            if grads is not None:
                mx.eval(grads)

        pairs = sum(int(b.num_pairs) for b in batches)
        if method == "dpo":
            stats: Any = PreferenceStats()
            for batch in batches:
                add(self._dpo(batch, train, stats))
            if grads is not None:
                grads = tree_map(lambda g: g / pairs, grads)
        elif method == "orpo":
            tokens = int(sum(answer_token_counts(b.labels)[: b.num_pairs].sum() for b in batches))
            stats = ORPOStats(beta=self.config.orpo.beta)
            for batch in batches:
                add(self._orpo(batch, train, stats, tokens, pairs))
        elif method == "kto":
            stats = KTOStats()
            for batch in batches:
                add(self._kto(batch, train, stats, pairs))
        else:
            raise ValueError(f"method {method!r} is not a preference method ({', '.join(METHODS)})")
        return stats, grads

    def loss_and_gradients(self, micro_batches: list[Batch]) -> tuple[float, Any, dict[str, float]]:
        """(the step's loss, its gradients (a tree like the trainable parameters), the method's
        ``STEP_FIELDS``) over ``micro_batches``; the loss is the mean over the step as the
        method's module defines it."""
        stats, grads = self._run(micro_batches, train=True)
        extra = stats.metrics()
        return extra.pop("loss"), grads, extra

    def eval_metrics(self, batches: list[Batch]) -> dict[str, float]:
        """{"val_loss", ...the method's EVAL_FIELDS} over ``batches``, without gradients (the
        engine sets eval mode around it)."""
        stats, _ = self._run(batches, train=False)
        return stats.eval_metrics()
