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
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.errors import EXIT_OK
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


def cli_export_model(args: argparse.Namespace) -> int:
    """``tunedesk export RUN_DIR --format F [--quant Q] [--out DIR] [--register NAME] [--json]``.

    Prints the output folder and how to run it (or, with ``--json``, the events). SIGTERM (the
    app's Cancel) stops it like Ctrl-C: the temporary folder is removed. ``--dry-run`` makes every
    check and prints the plan (``ExportPlan.to_dict``: format, quant, path, bytes, bytes_needed,
    base_model, architecture; one JSON object with ``--json``) without writing."""
    from backends.events import stdout_sink

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

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
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, stop)
    sink = stdout_sink() if args.json else None

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
