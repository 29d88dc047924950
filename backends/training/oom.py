"""Out of memory: recognising the error (every allocator words it differently) and the concrete
ways out, shared by both backends' ``run_failed`` hints and the steps before training."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

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
    tips.append("or use a smaller model (QLoRA 4-bit loading is not available in TuneDesk yet)")
    return "; ".join(tips)


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
