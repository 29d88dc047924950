"""Direct Preference Optimization (DPO): the framework-neutral parts shared by both engines.

The loss (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly
a Reward Model", eq. 7), for a prompt x with a chosen answer y_w and a rejected answer y_l:

    h      = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
    loss   = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

``log pi(y|x)`` is the policy's (base model + adapter) log-probability of the answer: the sum of
the per-token log-probabilities over the answer's tokens only (the prompt is context, never a
target). ``ref`` is the reference model: the same base model with the adapter disabled, so no
second copy of the weights is held. ``eps`` is the label smoothing of conservative DPO (cDPO,
Mitchell 2023: the preference label is taken as flipped with probability eps; ``eps = 0`` is plain
sigmoid DPO). This is the ``sigmoid`` loss with ``label_smoothing`` of older TRL releases (TRL 1.x
keeps the same two terms in its ``aot`` losses and uses label smoothing in ``robust``/``exo_pair``).
At initialisation LoRA's B is zero, so the policy equals the reference: h = 0 and the loss is
ln 2 = 0.693147 whatever beta and eps are.

Reported with every step (means over the step's pairs, names as TRL's ``rewards/*`` metrics):
``rewards_chosen`` = beta * (log pi(y_w|x) - log ref(y_w|x)), ``rewards_rejected`` likewise for
y_l, ``reward_margin`` = chosen minus rejected reward, ``reward_accuracy`` = share of pairs whose
chosen reward is strictly above the rejected one (0 at step 1, where they are equal).

Each engine computes the per-answer log-probabilities in its own framework and calls
``sigmoid_dpo_loss`` with its arrays (torch tensors or MLX arrays: only arithmetic operators and
the framework's ``log_sigmoid`` are used), so the formula exists once. ``PreferenceStats`` turns
the per-pair values into the reported means, ``ReferenceCache`` holds precomputed reference
log-probabilities (``dpo.precompute_ref_log_probs``) for the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from backends.data.types import PreferenceBatch
from backends.events import DPO_EVAL_FIELDS, DPO_STEP_FIELDS

# Extra fields of `step` and `eval` events for DPO runs (the schema lives in backends/events.py).
STEP_FIELDS = DPO_STEP_FIELDS
EVAL_FIELDS = DPO_EVAL_FIELDS

# The file a checkpoint keeps precomputed reference log-probabilities in.
REFERENCE_FILE = "reference_log_probs.npz"

T = TypeVar("T")


def sigmoid_dpo_loss(
    policy_chosen: T,
    policy_rejected: T,
    reference_chosen: T,
    reference_rejected: T,
    *,
    beta: float,
    label_smoothing: float,
    log_sigmoid: Callable[[T], T],
) -> tuple[T, T, T]:
    """Per-pair sigmoid DPO loss with optional cDPO label smoothing (formula in the module
    docstring), and the implicit rewards.

    Inputs: summed answer log-probabilities (natural log), each of shape [B] (one per pair), as
    torch tensors, MLX arrays or numpy arrays; ``log_sigmoid`` is the framework's (e.g.
    ``torch.nn.functional.logsigmoid``, ``mlx.nn.log_sigmoid``). Returns (losses [B],
    chosen_rewards [B], rejected_rewards [B]); rewards are beta times the log-ratio to the
    reference. Gradients flow through the policy inputs as usual for the framework.
    """
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -(1.0 - label_smoothing) * log_sigmoid(logits)
    if label_smoothing:
        losses = losses - label_smoothing * log_sigmoid(-logits)
    return losses, beta * chosen_ratio, beta * rejected_ratio


def numpy_log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) computed stably in numpy (for tests and CPU-side checks)."""
    x = np.asarray(x, dtype=np.float64)
    return -np.logaddexp(0.0, -x)


@dataclass
class PreferenceStats:
    """Sums over the pairs of one step (or one evaluation), turned into means by ``metrics``."""

    pairs: int = 0
    loss: float = 0.0
    chosen: float = 0.0
    rejected: float = 0.0
    correct: int = 0

    def add(self, losses: Any, chosen_rewards: Any, rejected_rewards: Any) -> None:
        """Add one micro-batch's per-pair values (anything ``np.asarray`` takes, shape [B])."""
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        chosen = np.asarray(chosen_rewards, dtype=np.float64).reshape(-1)
        rejected = np.asarray(rejected_rewards, dtype=np.float64).reshape(-1)
        self.pairs += int(losses.size)
        self.loss += float(losses.sum())
        self.chosen += float(chosen.sum())
        self.rejected += float(rejected.sum())
        self.correct += int((chosen > rejected).sum())

    def metrics(self) -> dict[str, float]:
        """{"loss": mean DPO loss per pair, "rewards_chosen", "rewards_rejected", "reward_margin",
        "reward_accuracy"} (means over the pairs added; NaN when none was)."""
        if self.pairs == 0:
            nan = float("nan")
            return {"loss": nan, **dict.fromkeys(STEP_FIELDS, nan)}
        n = self.pairs
        return {
            "loss": self.loss / n,
            "rewards_chosen": self.chosen / n,
            "rewards_rejected": self.rejected / n,
            "reward_margin": (self.chosen - self.rejected) / n,
            "reward_accuracy": self.correct / n,
        }

    def eval_metrics(self) -> dict[str, float]:
        """What an engine's ``eval_metrics`` returns for DPO: {"val_loss": mean DPO loss per pair,
        plus ``EVAL_FIELDS`` (reward_accuracy, reward_margin)}."""
        m = self.metrics()
        return {"val_loss": m["loss"], **{k: m[k] for k in EVAL_FIELDS}}


class ReferenceCache:
    """Reference log-probabilities computed once per example before training
    (``dpo.precompute_ref_log_probs``), keyed by (split, source row number).

    ``compute`` runs the engine's ``reference_log_probs`` over the batches of a split; ``attach``
    sets ``PreferenceBatch.reference_log_probs`` of a batch from the cache; ``save``/``load`` keep
    the cache in a checkpoint (with the data fingerprint it belongs to), so a resume does not
    recompute it. The reference is the frozen base model, so a recomputation gives the same values
    up to floating-point summation order.
    """

    def __init__(self) -> None:
        self.values: dict[str, dict[int, tuple[float, float]]] = {}
        self.fingerprint = ""

    def has(self, split: str) -> bool:
        """True when the split's values are complete."""
        return split in self.values

    def compute(
        self,
        split: str,
        batches: Iterable[PreferenceBatch],
        reference_log_probs: Callable[[PreferenceBatch], np.ndarray],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Fill the split from ``reference_log_probs(batch) -> [2B]`` (chosen rows first). Returns
        False (and keeps nothing for the split) when ``should_stop`` turned true on the way."""
        values: dict[int, tuple[float, float]] = {}
        for batch in batches:
            if should_stop():
                return False
            logps = np.asarray(reference_log_probs(batch), dtype=np.float64).reshape(-1)
            n = batch.num_pairs
            if logps.shape != (2 * n,):
                raise ValueError(f"reference log-probs of shape {logps.shape}, expected ({2 * n},)")
            for i, row in enumerate(batch.rows[:n]):
                values[int(row)] = (float(logps[i]), float(logps[n + i]))
        self.values[split] = values
        return True

    def attach(self, split: str, batch: PreferenceBatch) -> None:
        """Set ``batch.reference_log_probs`` ([2B] float64) from the split's values. Raises KeyError
        for a row the cache does not hold."""
        values = self.values[split]
        n = batch.num_pairs
        pairs = [values[int(row)] for row in batch.rows[:n]]
        batch.reference_log_probs = np.array([c for c, _ in pairs] + [r for _, r in pairs], dtype=np.float64)

    def save(self, folder: Path) -> None:
        """Write the cache into a checkpoint folder (``REFERENCE_FILE``); nothing when empty."""
        if not self.values:
            return
        arrays: dict[str, np.ndarray] = {"fingerprint": np.array(self.fingerprint)}
        for split, values in self.values.items():
            rows = sorted(values)
            arrays[f"{split}_rows"] = np.array(rows, dtype=np.int64)
            arrays[f"{split}_log_probs"] = np.array([values[r] for r in rows], dtype=np.float64).reshape(
                -1, 2
            )
        with open(Path(folder) / REFERENCE_FILE, "wb") as fh:
            np.savez(fh, **arrays)

    def load(self, folder: Path, fingerprint: str) -> bool:
        """Read a checkpoint's cache when it exists and belongs to data with ``fingerprint``;
        returns True when something was loaded."""
        path = Path(folder) / REFERENCE_FILE
        if not path.is_file():
            return False
        try:
            with np.load(path) as data:
                if str(data["fingerprint"]) != fingerprint:
                    return False
                for key in data.files:
                    if key.endswith("_rows"):
                        split = key[: -len("_rows")]
                        logps = data[f"{split}_log_probs"]
                        self.values[split] = {
                            int(r): (float(c), float(j)) for r, (c, j) in zip(data[key], logps, strict=True)
                        }
        except (OSError, ValueError, KeyError):
            self.values = {}
            return False
        self.fingerprint = fingerprint
        return bool(self.values)
