"""``tunedesk export RUN_DIR --format merged|gguf|ollama|mlx [--quant Q] [--out DIR] [--json]``.

Every check (``backends.jobs.export.source.plan_export``: a run with no adapter yet, a missing base
model, the output folder, the free disk space; then the tools and the architecture for GGUF and
MLX) runs before anything is written. The output is written into a hidden temporary folder beside
``--out`` and renamed into place at the end (``backends.runs.atomic_dir``), so a failure, Ctrl-C
or a kill never leaves a half-written output under the output's name.

Events (``--json``, one JSON line each on stdout; ``backends.events``):
``export_progress`` {stage, done, total} with stage ``merge`` (tensors), ``convert`` (tensors),
``quantize``, ``load``, ``fuse``, ``register``; then ``export_finished`` {path (the output folder),
format, quant, bytes (on disk), file (the main file: the GGUF, the Modelfile, or the folder),
ollama_name (the Ollama model name for ``ollama create``: ``--register`` or the run's name)}.
A failure or a stop ends the stream with ``export_failed`` {kind (``input``: bad input, exit 1;
``stopped``: Ctrl-C or SIGTERM, exit 130; else a ``run_failed`` kind: ``model``, ``disk``, ``oom``,
``crash``, exit 3), message, hint, exit_code}, so a ``--json`` reader always sees an end event; the
message also goes to stderr as without ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.errors import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_STOPPED,
    RunFailed,
    RunStopped,
    TuneDeskError,
    UserInputError,
)
from backends.jobs.export.howto import ollama_name, run_commands
from backends.jobs.export.source import ExportPlan, plan_export

Progress = Callable[[str, int, int], None]


def _find_model(name: str) -> Path:
    """A model by name from the store, importing the default model on first use."""
    from backends import models

    return models.resolve_model(name)


def _check_tools(plan: ExportPlan) -> None:
    if plan.format in ("gguf", "ollama"):
        from backends.jobs.export.gguf import check_ready

        check_ready(plan.source)
    elif plan.format == "mlx":
        from backends.jobs.export.mlx import check_ready

        check_ready()


def export_model(
    run_dir: str | Path,
    fmt: str,
    quant: str | None = None,
    out: str | Path | None = None,
    *,
    register: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export the tuned model of ``run_dir`` (a run folder or an adapter folder) as ``fmt``.

    Returns the ``export_finished`` fields: ``path``, ``format``, ``quant``, ``bytes``, ``file``.
    Raises UserInputError (exit 1) for every bad input, before writing; RunFailed (exit 3) when a
    tool fails midway, leaving nothing under the output's name.
    """
    from backends.model_store_info import folder_size
    from backends.runs import atomic_dir

    plan = plan_export(run_dir, fmt, quant, out, find_model=_find_model)
    _check_tools(plan)
    if register and fmt != "ollama":
        from backends.errors import UserInputError

        raise UserInputError("--register goes with --format ollama", field="--register")
    if register and shutil.which("ollama") is None:
        from backends.errors import UserInputError

        raise UserInputError(
            "--register needs ollama on PATH, and it is not there: nothing was exported",
            field="--register",
            hint="install Ollama, or export without --register and run the printed `ollama create` later",
        )
    with atomic_dir(plan.out) as tmp:
        if fmt == "merged":
            from backends.jobs.export.merged import write_merged

            write_merged(plan.source, tmp, plan.quant, progress)
            main = tmp
        elif fmt == "gguf":
            from backends.jobs.export.gguf import write_gguf

            main = write_gguf(plan.source, tmp, plan.quant, progress)
        elif fmt == "ollama":
            from backends.jobs.export.ollama import write_ollama

            main = write_ollama(plan.source, tmp, plan.quant, progress)
        else:
            from backends.jobs.export.mlx import write_mlx

            main = write_mlx(plan.source, tmp, plan.quant, progress)
        main_name = main.relative_to(tmp) if main != tmp else None
    if register:
        from backends.jobs.export.ollama import register as ollama_register

        if progress is not None:
            progress("register", 0, 1)
        ollama_register(plan.out, register)
        if progress is not None:
            progress("register", 1, 1)
    return {
        "path": str(plan.out),
        "format": fmt,
        "quant": plan.quant,
        "bytes": folder_size(plan.out),
        "file": str(plan.out / main_name) if main_name else str(plan.out),
        "ollama_name": register or ollama_name(plan.source.name),
    }


def next_steps(result: dict[str, Any], register: str | None = None) -> list[str]:
    """The commands of ``run_commands`` as lines for the terminal."""
    return [
        f"{tool}: {line}"
        for tool, commands in run_commands(result, registered=register is not None)
        for line in commands.splitlines()
        if not line.startswith("#")
    ]


def _human_progress(stage: str, done: int, total: int) -> None:
    if done in (0, total) or (total >= 10 and done % max(1, total // 10) == 0):
        print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)


def failure_fields(exc: BaseException) -> dict[str, Any]:
    """The ``export_failed`` fields for an exception that ends an export: kind, message, hint and
    the exit code the CLI returns for it (``backends.cli.main``'s mapping)."""
    if isinstance(exc, KeyboardInterrupt | RunStopped):
        return {"kind": "stopped", "message": "stopped", "hint": "", "exit_code": EXIT_STOPPED}
    if isinstance(exc, UserInputError):
        hint = exc.hint or ""
        text = str(exc).removesuffix(f" ({hint})") if hint else str(exc)
        return {"kind": "input", "message": text, "hint": hint, "exit_code": exc.exit_code}
    if isinstance(exc, RunFailed):
        return {"kind": exc.kind, "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
    from backends.training.oom import is_out_of_memory

    kind = "oom" if is_out_of_memory(exc) else "crash"
    code = exc.exit_code if isinstance(exc, TuneDeskError) else EXIT_RUN_FAILED
    text = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
    return {"kind": kind, "message": text, "hint": "", "exit_code": code}


def cli_export_model(args: argparse.Namespace) -> int:
    """``tunedesk export RUN_DIR --format F [--quant Q] [--out DIR] [--register NAME] [--json]``.

    Prints the output folder and how to run it (or, with ``--json``, the events). SIGTERM (the
    app's Cancel) stops it like Ctrl-C: the temporary folder is removed. ``--dry-run`` makes every
    check and prints the plan (``ExportPlan.to_dict``: format, quant, path, bytes, bytes_needed,
    base_model, architecture; one JSON object with ``--json``) without writing."""
    from backends.events import stdout_sink

    if hasattr(signal, "SIGTERM") and not args.dry_run:
        signal.signal(signal.SIGTERM, _stop)
    sink = stdout_sink() if args.json else None
    try:
        return _export(args, sink)
    except (Exception, KeyboardInterrupt) as exc:
        if sink is not None:
            with contextlib.suppress(OSError, ValueError):  # stdout may be the closed pipe itself
                sink.emit("export_failed", **failure_fields(exc))
        raise  # backends.cli.main prints the message on stderr and returns the exit code


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _export(args: argparse.Namespace, sink: Any) -> int:
    if args.dry_run:
        import json

        plan = plan_export(args.run_dir, args.format, args.quant, args.out, find_model=_find_model)
        _check_tools(plan)
        info = plan.to_dict()
        print(
            json.dumps(info)
            if args.json
            else f"would write {info['format']} ({info['quant']}): about "
            f"{info['bytes'] / 1e6:.0f} MB to {info['path']} (needs {info['bytes_needed'] / 1e6:.0f} MB free)"
        )
        return EXIT_OK

    def progress(stage: str, done: int, total: int) -> None:
        if sink is not None:
            sink.emit("export_progress", stage=stage, done=done, total=total)
        else:
            _human_progress(stage, done, total)

    result = export_model(
        args.run_dir, args.format, args.quant, args.out, register=args.register, progress=progress
    )
    if sink is not None:
        sink.emit("export_finished", **result)
        return EXIT_OK
    print(
        f"exported {result['format']} ({result['quant']}, {result['bytes'] / 1e6:.1f} MB): {result['path']}"
    )
    for line in next_steps(result, args.register):
        print(f"  next: {line}")
    return EXIT_OK
