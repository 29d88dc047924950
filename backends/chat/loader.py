"""Open a chat session: pick the model (given, or the adapter's base model), the backend, warn
about memory when training runs, load the engine and the adapter.

Everything that can be wrong with the user's input (adapter path, base-model mismatch, backend)
is checked before the model is loaded, so a mistake fails in a second, not after a long load.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from backends.chat.adapters import AdapterInfo, check_base_model, read_adapter
from backends.chat.session import ChatEngine, ChatSession
from backends.config import DEFAULT_MODEL
from backends.jobs.backend import select_backend

Say = Callable[[str, str], None]  # (level, message)


def _say_nothing(level: str, message: str) -> None:
    pass


def mlx_available() -> bool:
    """True when mlx-lm can be imported here."""
    return importlib.util.find_spec("mlx_lm") is not None and importlib.util.find_spec("mlx") is not None


def resolve_chat_model(
    model: str | None, adapter: AdapterInfo | None, say: Say = _say_nothing
) -> tuple[Path, str]:
    """(model folder, model name) for ``--model`` or, when it is None, the adapter's base model
    (its recorded folder if still there, else its name in the model store), else the default.
    Raises UserInputError for an unknown model."""
    from backends import models

    if model is None and adapter is not None and adapter.base_model:
        base = adapter.base_model
        path = base.get("path")
        if path and (Path(path) / "config.json").is_file():
            return Path(path), base.get("name") or Path(path).name
        model = base.get("name") or path
    name = model or DEFAULT_MODEL
    folder = models.resolve_model(name, progress=lambda m: say("info", m))
    return Path(folder), name


def convert_for(info: AdapterInfo, backend: str, say: Say = _say_nothing) -> AdapterInfo:
    """The adapter in the format ``backend`` loads: itself, or an exact conversion (PEFT <-> MLX,
    ``backends.export``) into a temporary folder, keeping the original's identity (run folder)."""
    want = "peft" if backend == "torch" else "mlx"
    if info.format == want:
        return info
    from backends.export import export_adapter

    tmp = Path(tempfile.mkdtemp(prefix="tunedesk-chat-adapter-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the loaded copy lives as long as the chat
    out = tmp / "adapter"
    say("info", f"converting the {info.format} adapter {info.path} to {want} for the {backend} backend")
    export_adapter(info.path, want, out)
    converted = read_adapter(out)
    return AdapterInfo(
        path=converted.path,
        format=converted.format,
        config=converted.config,
        base_model=info.base_model,
        chat_template=info.chat_template,
        meta=info.meta,
        run_dir=info.run_dir or info.path,
    )


def make_chat_engine(backend: str, model_dir: Path, device: str | None = None) -> ChatEngine:
    """Load the base model for ``backend`` ("torch" or "mlx")."""
    if backend == "mlx":
        from backends.chat.mlx_generator import MlxChatEngine

        return MlxChatEngine(model_dir)
    from backends.chat.torch_generator import TorchChatEngine

    return TorchChatEngine(model_dir, device)


def open_session(
    model: str | None = None,
    adapter: str | Path | None = None,
    backend: str = "auto",
    *,
    runs_dir: str | Path | None = None,
    say: Say = _say_nothing,
) -> ChatSession:
    """A ready chat session: the base model loaded and, with ``adapter``, that adapter active.

    ``say(level, message)`` gets progress and warnings (the memory warning when a training run is
    active and both would not fit). Raises UserInputError (naming the path) for a missing adapter
    folder, a folder without adapter config, an adapter trained on another base model, an unknown
    model, or an unavailable backend; never falls back to the base model silently.
    """
    info = read_adapter(adapter) if adapter is not None else None
    model_dir, model_name = resolve_chat_model(model, info, say)
    if info is not None:
        check_base_model(info, model_dir, model_name)
    chosen, device = select_backend(backend)
    from backends.chat.memory import memory_warning

    warning = memory_warning(model_dir, device or "gpu", runs_dir, backend=chosen)
    if warning:
        say("warning", warning)
    say("info", f"loading {model_name} ({model_dir}) on {chosen}")
    if info is not None:
        # Which weights answer: a finished run's adapter/, or a stopped run's latest checkpoint.
        latest = (
            " (the run has no final adapter: its latest checkpoint)" if info.meta.get("checkpoint") else ""
        )
        say("info", f"adapter {info.name}: {info.path}{latest}")
    engine = make_chat_engine(chosen, model_dir, device)
    session = ChatSession(engine, model_dir, model_name, convert=lambda i: convert_for(i, chosen, say))
    if adapter is not None:
        session.set_adapter(adapter)
    return session
