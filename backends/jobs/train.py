"""One training run end to end: config -> model -> data -> engine -> run folder -> loop.

``run_training`` is what ``tunedesk train``, ``tunedesk demo`` and the app's training worker run
(the engine comes from ``backends.jobs.backend.make_engine``).
Everything that can be wrong with the user's input (config, model, data, target modules) is
checked before the run folder is created, so a rejected run leaves no folder behind. Events from
before the folder exists (model import, data report) are kept and written to its
``events.jsonl`` first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from backends.config import RunConfig, load_config
from backends.data.render import RenderSpec
from backends.data.run_prompt import PROMPT_FILE
from backends.durable import repair_torn_tail
from backends.errors import EXIT_OK, RunFailed, RunStopped, UserInputError
from backends.events import EventSink, encode
from backends.forgetting.hook import ForgettingHook
from backends.forgetting.render import spec_renderer
from backends.jobs import dist_worker
from backends.jobs.backend import make_engine
from backends.jobs.dist_worker import Process
from backends.jobs.resume import check_resume_config
from backends.runs import RunDir, atomic_write_text, run_status
from backends.training.distributed import world_of
from backends.training.engine import Engine
from backends.training.loop import TrainingLoop, stop_on_signals
from backends.training.oom import memory_errors_as_oom
from backends.training.progress import ConsoleProgress, LogFile


def tunedesk_version() -> str:
    """The installed TuneDesk version (package metadata, else ``backends.__version__``)."""
    try:
        return metadata.version("tunedesk")
    except metadata.PackageNotFoundError:
        from backends import __version__

        return __version__


def record_prompt_spec(run_dir: Path, spec: RenderSpec | None) -> None:
    """Write what the prompt renderer used (template, system prompt, BOS rule, special-token
    policy) into the run folder's ``prompt.json``, where chat and export read it
    (``backends.data.render.spec_for_run``). Nothing for a run without a template."""
    if spec is not None:
        atomic_write_text(Path(run_dir) / PROMPT_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")


def resolve_data_paths(config: RunConfig, base: Path | None = None) -> RunConfig:
    """A copy of ``config`` whose data files are absolute paths (relative ones are taken from
    ``base``, default the current directory); no ``train_file`` means the built-in sample data
    (``resources/demo/support_train.jsonl``). The run folder's ``config.yaml`` stores these, so
    a resume works from any directory."""
    from backends.data import sample_data_path

    base = Path(base or os.getcwd())
    data = config.data
    train = data.train_file if data.train_file is not None else sample_data_path()
    update: dict[str, Any] = {"train_file": (base / Path(train).expanduser()).resolve()}
    for key in ("validation_file", "replay_file"):
        if getattr(data, key) is not None:
            update[key] = (base / Path(getattr(data, key)).expanduser()).resolve()
    return config.model_copy(update={"data": data.model_copy(update=update)})


def run_training(
    config: RunConfig | None = None,
    *,
    json_stdout: bool = False,
    resume_dir: str | Path | None = None,
    stop: threading.Event | None = None,
    console: bool | None = None,
    allow_config_change: bool = False,
    process: Process | None = None,
) -> RunDir:
    """Train one run and return its folder (see the module docstring).

    ``config``: the run config (ignored with ``resume_dir``, whose ``config.yaml`` is used).
    ``json_stdout``: also print every event as a JSON line on stdout. ``resume_dir``: a run folder
    to continue from its newest complete checkpoint (from the start when it has none).
    ``stop``: an event that stops the run cooperatively (SIGINT/SIGTERM set it too).
    ``console``: the stderr progress bar and log lines (default: on unless ``json_stdout``).
    ``allow_config_change``: resume although ``config.yaml`` differs from the checkpoint's
    (``backends.jobs.resume``; the change is noted in the events), else such a resume is refused.
    The prompt renderer's spec (``backends.data.render.RenderSpec``) is recorded in the run
    folder's ``prompt.json`` and the adapter's ``tunedesk.json``, so chat renders as training did.
    ``process``: this process's place in a run on several (``backends.jobs.dist_worker``): only
    rank 0 creates, locks and writes the run folder and prints; the others learn its path from it.

    Raises UserInputError (exit 1) for bad input, RunFailed (exit 3) when the run failed,
    RunStopped (exit 130) when it was stopped; the last two after their event was written.
    """
    from backends import models
    from backends.data import batcher_for, load_tokenizer, prepare_data

    stop = stop if stop is not None else threading.Event()
    writer = process is None or process.writer
    console = (not json_stdout) if console is None else console
    listeners: list[Any] = [ConsoleProgress()] if console and writer else []
    stdout = sys.stdout if json_stdout else None
    new_sink = process.sink if process is not None else EventSink
    early_events: list[dict[str, Any]] = []
    early = new_sink(None, stdout=stdout, listeners=[early_events.append, *listeners])

    def say(message: str) -> None:
        early.emit("log", level="info", message=message)

    def stop_if_asked() -> None:
        # Ctrl-C while the model or data loads: nothing to save yet, so stop at once.
        if stop.is_set():
            raise RunStopped("stopped before training started")

    with stop_on_signals(stop), contextlib.ExitStack() as held:
        run: RunDir | None = None
        checkpoint = None
        if resume_dir is not None:
            run = RunDir(Path(resume_dir).expanduser())
            config = run.load_config()
            status = run_status(run) if writer else "stopped"  # rank 0 checks and locks
            if status == "finished":
                raise UserInputError(
                    "this run already finished; its adapter is in adapter/", file=run.path, field="--resume"
                )
            if status == "running":
                raise UserInputError(
                    f"this run is still running (process {run.lock_holder()})",
                    file=run.path,
                    field="--resume",
                )
            # Before the model loads: a second resume of this folder is refused at once.
            if writer:
                run.acquire_lock()
                held.callback(run.release_lock)
            checkpoint = run.latest_checkpoint()
            changes = check_resume_config(config, checkpoint, run.config_path, allow=allow_config_change)
            if changes:
                early.emit(
                    "log",
                    level="warning",
                    message="resuming with a changed config (--allow-config-change): "
                    + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes),
                    changed_keys=[k for k, _, _ in changes],
                )
            say(
                f"resuming from {checkpoint}"
                if checkpoint
                else "no complete checkpoint in this run folder: starting again from step 0"
            )
        if config is None:
            raise UserInputError("no config given", field="--config")
        config = resolve_data_paths(config)
        with failures_before_the_run(early):
            model_dir = models.resolve_model(config.model, progress=say)
            stop_if_asked()
            tokenizer = load_tokenizer(model_dir)
            say(f"preparing data from {config.data.train_file}")
            data = prepare_data(config, tokenizer, progress=say)
        stop_if_asked()
        for notice in getattr(data.report, "notices", []) or []:
            early.emit("log", level="info", message=str(notice))
        if data.report.rows_dropped:
            say(
                f"{data.report.rows_dropped} of {data.report.rows_read} rows dropped (see `tunedesk data check`)"
            )
        say(f"{len(data.train)} training examples, {len(data.validation or [])} validation examples")
        engine = make_engine(config)
        if process is not None and world_of(engine).size != process.size:
            raise UserInputError(
                f"the {engine.name} backend trains on one process here; --nproc needs PyTorch",
                field="backend",
                hint="set backend: torch, or drop --nproc",
            )
        say(f"loading {config.model} for {engine.name} on {engine.device}")
        # FSDP: the weights are sharded over the processes, so the one-device plan does not refuse.
        sharded = process is not None and config.training.distributed == "fsdp"
        if sharded:
            say("FSDP: the memory plan is for one process holding the whole model; not checked")
            say("the forgetting check is off with FSDP (it would run on rank 0 alone)")
        with failures_before_the_run(early, "loading the model"):
            config, memory_plan = plan_run(
                config, model_dir, engine, say, check=not sharded, several=process is not None
            )
            setup_info = engine.setup(config, model_dir)
        setup_info["memory_plan"] = memory_plan
        stop_if_asked()
        if process is not None:  # rank 0 makes the folder; the others get its path
            mine = run if run is not None else RunDir.create(config) if writer else None
            run = RunDir(Path(world_of(engine).broadcast(str(mine.path) if mine else None)))
            picked = world_of(engine).broadcast(str(checkpoint) if checkpoint else None)
            checkpoint = Path(picked) if picked else None  # every rank resumes from rank 0's choice
        elif run is None:
            run = RunDir.create(config)
        if writer:
            run.acquire_lock()
        try:
            log_file: Any = lambda event: None  # noqa: E731 (no log but rank 0's)
            if writer:
                record_prompt_spec(run.path, data.render_spec)
                repair_torn_tail(run.events_path)  # a killed writer's half line stays a line of its own
                with open(run.events_path, "a", encoding="utf-8") as fh:
                    for event in early_events:
                        fh.write(encode(event) + "\n")
                log_file = LogFile(run.log_path)
                for event in early_events:
                    log_file(event)
            pad = data.pad_token_id
            if pad is None:
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            with new_sink(run.events_path, stdout=stdout, listeners=[log_file, *listeners]) as sink:
                loop = TrainingLoop(
                    engine,
                    config,
                    data,
                    run,
                    sink,
                    setup_info=setup_info,
                    adapter_info={
                        "base_model": {"name": config.model, "path": str(model_dir)},
                        "tunedesk_version": tunedesk_version(),
                        "prompt": data.render_spec.to_dict() if data.render_spec is not None else None,
                    },
                    batcher=batcher_for(data.method),
                    stop=stop,
                    pad_token_id=int(pad or 0),
                    forgetting=None
                    if sharded
                    else ForgettingHook(
                        engine, config, tokenizer, spec_renderer(tokenizer, data.render_spec)
                    ),
                    vocab_size=len(tokenizer),
                )
                loop.run_loop(resume_from=checkpoint)
        finally:
            for listener in listeners:
                listener.close()
            if writer:
                run.release_lock()
    return run


def plan_run(
    config: RunConfig,
    model_dir: Path,
    engine: Engine,
    say: Any,
    *,
    check: bool = True,
    several: bool = False,
) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run's memory plan (``backends.plan``) for ``run_started.memory_plan``, and ``config``
    with ``training.gradient_checkpointing: null`` (auto) resolved by it. A model whose config.json
    the plan cannot read gets no plan (None; said in the log) and checkpointing off. ``check``:
    refuse a run the plan says does not fit (``refuse_if_it_cannot_fit``; ``several``: this is one of
    several processes, so the hint offers FSDP)."""
    from backends import model_shape, plan

    try:
        result = plan.plan_memory(
            config, model_shape.read_model_config(model_dir), plan.target_for(engine.name, engine.device)
        )
    except ValueError as exc:
        say(f"no memory plan for this model: {exc}")
        result = None
    if config.training.gradient_checkpointing is None:
        on = bool(result and result.settings["gradient_checkpointing"])
        config = config.model_copy(
            update={"training": config.training.model_copy(update={"gradient_checkpointing": on})}
        )
        if result is not None:
            say(plan.checkpointing_for(result))
    if result is not None:
        say(
            f"memory plan: peak {result.peak / plan.GB:.2f} GB on {result.target} "
            f"({result.verdict.replace('_', ' ')}; {(result.available or 0) / plan.GB:.1f} GB free)"
        )
        if check:
            refuse_if_it_cannot_fit(config, result, several=several)
    return config, result.to_json() if result is not None else None


def refuse_if_it_cannot_fit(config: RunConfig, result: Any, *, several: bool = False) -> None:
    """Before the model loads: a plan whose verdict is ``does_not_fit`` ends the run as RunFailed
    kind ``oom`` (exit 3) with the plan's nearest settings that fit, instead of letting the kernel
    kill the process mid-load (exit 137, no message). ``training.memory_check: false`` skips it."""
    from backends import plan

    if result.verdict != "does_not_fit" or not config.training.memory_check:
        return
    need, free = (result.peak + result.reserve) / plan.GB, (result.available or 0) / plan.GB
    hint = "; ".join(
        f"{s['label']} (" + " ".join(f"--set {k}={str(v).lower()}" for k, v in s["changes"].items()) + ")"
        for s in result.suggestions[:2]
    )
    raise RunFailed(
        "oom",
        f"the memory plan says this run needs about {need:.1f} GB and {free:.1f} GB is free on "
        f"{result.target}: not started",
        (f"try {hint}, or " if hint else "")
        + ("set training.distributed: fsdp to shard the model over the GPUs, or " if several else "")
        + "close other programs, or set training.memory_check: false to try anyway",
    )


@contextlib.contextmanager
def failures_before_the_run(early: EventSink, what: str = "reading the model and data") -> Iterator[None]:
    """Before the run folder exists: memory running out is RunFailed kind ``oom`` (exit 3, not a
    traceback), and a RunFailed is also sent as a ``run_failed`` event (step 0) to the listeners
    and ``--json`` stdout, so the app shows its message and hint."""
    try:
        with memory_errors_as_oom(what):
            yield
    except RunFailed as exc:
        early.emit("run_failed", step=0, kind=exc.kind, message=exc.message, hint=exc.hint)
        raise


def cli_train(args: argparse.Namespace) -> int:
    """``tunedesk train``: ``--config FILE [--set k=v ...] [--preset P]`` or ``--resume RUN_DIR``;
    ``--json`` prints events on stdout; ``--nproc N [--nnodes M --node-rank R --master HOST:PORT]``
    runs it on several processes through torchrun (``backends.jobs.launch``). Returns 0; failures
    raise (``backends.cli`` maps them to exit codes 1, 3 and 130)."""
    if getattr(args, "allow_config_change", False) and not args.resume:
        raise UserInputError("--allow-config-change goes with --resume", field="--allow-config-change")
    if args.resume and (args.overrides or args.preset):
        raise UserInputError(
            "--set and --preset cannot change a run being resumed",
            field="--resume",
            hint="start a new run with --config to change settings",
        )
    for flag in ("nproc", "nnodes"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            raise UserInputError(f"--{flag} must be at least 1", field=f"--{flag}")
    process = dist_worker.current()
    if process is None and (getattr(args, "nproc", None) or 1) * (getattr(args, "nnodes", None) or 1) > 1:
        from backends.jobs.launch import launch

        if not args.resume:  # a wrong config is said once, before any process starts
            load_config(args.config, args.overrides, preset=args.preset)
        return launch(args)
    if process is not None:
        return _train_as_rank(args, process)
    run = _train(args)
    if not args.json:
        print(run.adapter_dir)
    return EXIT_OK


def _train(args: argparse.Namespace, **options: Any) -> RunDir:
    if args.resume:
        return run_training(
            None,
            json_stdout=args.json,
            resume_dir=args.resume,
            allow_config_change=getattr(args, "allow_config_change", False),
            **options,
        )
    config = load_config(args.config, args.overrides, preset=args.preset)
    return run_training(config, json_stdout=args.json, **options)


def _train_as_rank(args: argparse.Namespace, process: dist_worker.Process) -> int:
    """One process of several: train, and leave the outcome in its status for the launcher
    (``backends.jobs.dist_worker``). A stopped process exits 0 (torchrun then ends quietly; the
    launcher exits 130); a failed one exits as on one process, and torchrun ends the others."""
    stop = threading.Event()
    dist_worker.watch_stop_file(process, stop)
    try:
        run = _train(args, stop=stop, process=process)
    except RunStopped as exc:
        process.finish("stopped")
        if process.writer and process.folder is None:  # else the launcher says it, with --nproc
            print(f"stopped: {exc}" if not str(exc).startswith("stopped") else str(exc), file=sys.stderr)
        return EXIT_OK
    except RunFailed as exc:
        process.finish("failed", kind=exc.kind, message=exc.message, hint=exc.hint)
        raise
    except UserInputError as exc:
        process.finish("input", message=str(exc))
        raise
    except BaseException as exc:
        from backends.training.oom import is_out_of_memory

        kind = "oom" if is_out_of_memory(exc) else "crash"
        process.finish("failed", kind=kind, message=f"{type(exc).__name__}: {exc}", hint="")
        raise
    process.finish("finished")
    if process.writer and not args.json:
        print(run.adapter_dir)
    return EXIT_OK
