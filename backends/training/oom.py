"""Concrete ways out of an out-of-memory failure, shared by both backends' ``run_failed`` hints."""

from __future__ import annotations

from backends.config import RunConfig


def oom_hint(config: RunConfig) -> str:
    """The settings to change after an out-of-memory failure of a run with ``config``."""
    t = config.training
    tips = []
    if t.batch_size > 1:
        tips.append(
            f"lower training.batch_size (now {t.batch_size}, try {max(1, t.batch_size // 2)}) and raise "
            f"training.gradient_accumulation_steps to {t.gradient_accumulation_steps * 2} to keep the effective batch"
        )
    tips.append(f"lower training.max_seq_length (now {t.max_seq_length})")
    if not t.gradient_checkpointing:
        tips.append("set training.gradient_checkpointing: true")
    tips.append("or use a smaller model (QLoRA 4-bit loading is not available in TuneDesk yet)")
    return "; ".join(tips)
