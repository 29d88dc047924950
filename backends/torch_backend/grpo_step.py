"""GRPO on the PyTorch engine: sampling the groups, scoring them, and the policy-gradient step
around the framework-neutral formulas of ``backends.training.grpo`` and the reward functions of
``backends.training.rewards``.

One optimizer step: for every prompt of the step's micro-batches, the policy (adapter on, dropout
off) samples ``num_generations`` completions with transformers' ``generate`` (torch's RNG, which
checkpoints keep, so a resume samples the same completions); each completion ends at the first
end-of-sequence token (kept) or at ``max_completion_length`` tokens. Rewards and group-normalised
advantages come next; then per micro-batch one forward (train mode) gives the per-token
log-probabilities, one forward with the adapter disabled the reference's (only when beta > 0), and
the backward of its share of the step's loss (``grpo.token_weights``). The engine's ``_update``
then clips and applies the gradients as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backends.data.batching import _pad_rows
from backends.data.types import IGNORE_INDEX, PromptBatch
from backends.training.grpo import GRPOStats, group_advantages, per_token_loss, token_weights
from backends.training.rewards import Reward, build_rewards


@dataclass
class Scored:
    """The sampled completions of one micro-batch with their rewards."""

    prompts: list[list[int]]
    completions: list[list[int]]  # prompts * G, a prompt's group contiguous
    rewards: np.ndarray  # [N, F] per reward function
    advantages: np.ndarray  # [N]


class GRPORunner:
    """Per-run GRPO state of a TorchEngine: the tokenizer (to decode completions for the rewards)
    and the reward functions (a user's Python file is imported here, in the worker)."""

    def __init__(self, engine: Any) -> None:
        from backends.data import load_tokenizer

        self.engine = engine
        self.cfg = engine.config.grpo
        self.tokenizer = load_tokenizer(engine.model_dir)
        self.rewards: list[Reward] = build_rewards(self.cfg.rewards)
        hf = engine.model.get_base_model()
        eos = hf.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        pad = self.tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else next(iter(self.eos)))

    def sample(self, prompt: list[int], n: int) -> list[list[int]]:
        """``n`` completions of one prompt (token ids, each cut after its first EOS)."""
        model = self.engine.model
        ids = torch.tensor([prompt], device=self.engine.device)
        with torch.no_grad(), self.engine._autocast():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=self.cfg.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=self.cfg.max_completion_length,
                num_return_sequences=n,
                pad_token_id=self.pad,
                use_cache=True,
            )
        completions = []
        for row in out[:, len(prompt) :].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in self.eos), len(row))
            completions.append(row[:end])
        return completions

    def score(self, batch: PromptBatch, group: int) -> Scored:
        """Sample ``group`` completions per prompt of ``batch`` and compute their rewards."""
        decode = self.tokenizer.decode
        self.engine.model.eval()
        try:
            completions: list[list[int]] = []
            for prompt in batch.prompts:
                completions += self.sample(prompt, group)
        finally:
            self.engine.model.train()
        rewards = np.zeros((len(completions), len(self.rewards)))
        for i, completion in enumerate(completions):
            k = i // group
            prompt_text = decode(batch.prompts[k], skip_special_tokens=False)
            answer = decode(batch.answers[k], skip_special_tokens=True)
            text = decode(completion, skip_special_tokens=True)
            for j, reward in enumerate(self.rewards):
                rewards[i, j] = reward.fn(prompt_text, text, answer)
        total = rewards @ np.array([r.weight for r in self.rewards])
        return Scored(batch.prompts, completions, rewards, group_advantages(total, group))

    def token_log_probs(self, scored: Scored, group: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Per-token log-probabilities of the completions ([N_tokens] fp32, with gradients), each
        token's completion index, and the padded batch."""
        rows = []
        for i, completion in enumerate(scored.completions):
            prompt = scored.prompts[i // group]
            ids = prompt + completion
            rows.append((ids, [IGNORE_INDEX] * len(prompt) + completion, list(range(len(ids))), None))
        batch = _pad_rows(rows, self.pad, list(range(len(rows))))
        losses, row_index = self.engine.labelled_losses(batch)
        return -losses, row_index, batch

    def backward(self, micro_batches: list[PromptBatch]) -> dict[str, float]:
        """Sample, score and back-propagate the step's GRPO loss; returns its metrics. Sets each
        micro-batch's ``num_tokens`` to the prompt and completion tokens trained on."""
        scored = [self.score(b, self.cfg.num_generations) for b in micro_batches]
        metrics, tokens = self.learn(scored)
        for batch, n in zip(micro_batches, tokens, strict=True):
            batch.num_tokens = n
        return metrics

    def learn(self, scored: list[Scored]) -> tuple[dict[str, float], list[int]]:
        """Back-propagate the GRPO loss of already scored micro-batches (one optimizer step);
        returns (metrics, real tokens of each micro-batch)."""
        group = self.cfg.num_generations
        lengths = [np.array([len(c) for c in s.completions]) for s in scored]
        step_completions = sum(len(s.completions) for s in scored)
        step_tokens = int(sum(x.sum() for x in lengths))
        stats = GRPOStats([r.name for r in self.rewards])
        tokens = []
        for s, length in zip(scored, lengths, strict=True):
            logps, rows, padded = self.token_log_probs(s, group)
            ref = None
            if self.cfg.beta:
                with torch.no_grad(), self.engine.model.disable_adapter():
                    ref, _, _ = self.token_log_probs(s, group)
            adv = torch.as_tensor(s.advantages, dtype=torch.float32, device=logps.device)[rows]
            loss_t, kl_t, clipped = per_token_loss(
                logps,
                logps.detach(),
                ref,
                adv,
                beta=self.cfg.beta,
                epsilon=self.cfg.epsilon,
                xp=torch,
                kl_bias_correction=self.cfg.kl_bias_correction,
            )
            weights = token_weights(
                rows.cpu().numpy(),
                length,
                loss_type=self.cfg.loss_type,
                step_completions=step_completions,
                step_tokens=step_tokens,
            )
            loss = (loss_t * torch.as_tensor(weights, dtype=torch.float32, device=loss_t.device)).sum()
            self.engine._backward(loss)
            kl_sum = float(kl_t.detach().sum()) if kl_t is not None else 0.0
            stats.add(s.rewards, length, float(loss.detach()), kl_sum, float(clipped.sum()))
            tokens.append(int(padded.num_tokens))
        return stats.metrics([r.weight for r in self.rewards]), tokens

    def eval_metrics(self, batches: list[PromptBatch]) -> dict[str, float]:
        """One sampled completion per validation prompt: {"val_loss": -mean reward, "reward_mean"}."""
        totals = []
        for batch in batches:
            s = self.score(batch, 1)
            totals += list(s.rewards @ np.array([r.weight for r in self.rewards]))
        mean = float(np.mean(totals)) if totals else float("nan")
        return {"val_loss": -mean, "reward_mean": mean}
