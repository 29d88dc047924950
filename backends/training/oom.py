"""Out of memory: recognising the error (every allocator words it differently) and the concrete
ways out, shared by both backends' ``run_failed`` hints and the steps before training.

``oom_hint(config)`` lists the settings that lower memory; the loop adds the memory plan's nearest
settings that fit (``plan_hint``: ``backends.plan.suggestions`` against 80% of the failed run's
predicted peak), so the hint names concrete values, e.g. ``--set training.batch_size=2``.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from backends.config import RunConfig
from backends.errors import RunFailed


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
    if config.lora.quantize != 4:
        tips.append("set lora.quantize: 4 (a 4-bit base, QLoRA)")
    tips.append("or use a smaller model")
    return "; ".join(tips)


def plan_hint(config: RunConfig, model_dir: str | Path | None, target: str) -> str | None:
    """The memory plan's nearest settings that need at most 80% of what the failed run was predicted
    to need, as ``--set`` items with the predicted peak; None when the model's config.json cannot be
    read or nothing smaller is found."""
    from backends import model_shape, plan

    if model_dir is None:
        return None
    try:
        shape = model_shape.ModelShape.from_config(model_shape.read_model_config(model_dir))
    except ValueError:
        return None
    failed = sum(plan.breakdown(config, shape, target)[k] for k in plan.TRAIN_PARTS)
    found = plan.suggestions(config, shape, target, available=failed + plan.RESERVE[target], limit=1)
    if not found:
        return None
    best = found[0]
    sets = " ".join(f"--set {k}={str(v).lower()}" for k, v in best["changes"].items())
    return (
        f"the memory plan suggests {best['label']} ({sets}): about {best['peak'] / plan.GB:.2f} GB "
        f"instead of {failed / plan.GB:.2f} GB"
    )


# What allocators say when memory runs out: CPython (MemoryError), torch's CPU allocator ("can't
# allocate memory"), CUDA/MPS ("out of memory"), mmap/read of weights under a limit (ENOMEM).
_OOM_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory", "std::bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) means memory ran out: MemoryError, an OSError with errno
    ENOMEM, or an allocator's error text (``_OOM_TEXTS``; torch's OutOfMemoryError says "out of
    memory")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            return True
        if isinstance(exc, RuntimeError | OSError) and any(t in str(exc).lower() for t in _OOM_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


LOAD_OOM_HINT = (
    "this process ran out of memory before training started: close other programs, use a smaller "
    "model, or raise the memory limit (ulimit -v) if one is set"
)


@contextlib.contextmanager
def memory_errors_as_oom(what: str, hint: str = LOAD_OOM_HINT) -> Iterator[None]:
    """Turn an out-of-memory error (``is_out_of_memory``) raised inside into RunFailed kind
    ``oom`` ("out of memory while <what>: ...", exit 3); other errors pass unchanged."""
    try:
        yield
    except RunFailed:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise RunFailed("oom", f"out of memory while {what}: {detail}", hint) from exc
