"""The ``tunedesk`` command line (design: ``../shared/design.md``, "Command line").

Exit codes: 0 done; 1 the user's input is wrong (the message names file, line, field); 2 usage;
3 the run failed (NaN, out of memory, worker crash) with the last good checkpoint kept;
130 stopped by the user or a signal, checkpoint saved.

Each subcommand's work lives in the module that owns it; this module only parses arguments,
dispatches, and turns TuneDesk errors into messages and exit codes (never a bare traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from backends import paths
from backends.errors import (
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    RunFailed,
    RunStopped,
    TuneDeskError,
    UserInputError,
)


def _cmd_hardware(args: argparse.Namespace) -> int:
    from backends import hardware

    info = hardware.detect(probe_frameworks=True)
    print(json.dumps(info, indent=2) if args.json else hardware.format_report(info))
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from backends import models

    if args.models_cmd == "import":
        path = models.import_model(
            args.path,
            args.name,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            progress=models.print_progress,
        )
        print(path)
        return EXIT_OK
    rows = models.list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(
            "no models imported yet (`tunedesk models import PATH`; the default model imports on first use)"
        )
    else:
        for m in rows:
            print(f"{m['name']:40s} {m['params'] / 1e6:8.1f}M params {m['size'] / 1e6:9.1f} MB  {m['path']}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from backends.training import cli_train

    return cli_train(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from backends.demo import cli_demo

    return cli_demo(args)


def _cmd_data(args: argparse.Namespace) -> int:
    from backends.data.check import cli_check

    return cli_check(args)


def _cmd_chat(args: argparse.Namespace) -> int:
    from backends.chat import cli_chat

    return cli_chat(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from backends.export import cli_export

    return cli_export(args)


def _cmd_runs(args: argparse.Namespace) -> int:
    from backends.runs import list_runs, summarize_run

    rows = [summarize_run(r) for r in list_runs(args.runs_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        if not rows:
            print(f"no runs yet in {args.runs_dir or paths.runs_dir()}", file=sys.stderr)
        else:
            print(
                f"{'RUN':40s} {'STATUS':9s} {'STEPS':>6} {'TRAIN LOSS':>10} {'VAL LOSS':>9} {'STARTED':16s}"
            )
        for r in rows:
            train = f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-"
            val = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])) if r["started"] else "-"
            print(f"{r['name']:40s} {r['status']:9s} {r['steps']:>6} {train:>10} {val:>9} {started:16s}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tunedesk",
        description="Local, private LoRA fine-tuning of open LLMs. Without a command, opens the desktop app.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job on the embedded default model and sample data, end to end")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's own)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines on stdout")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="one training run")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", metavar="FILE.yaml", help="run config (YAML)")
    g.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its last checkpoint"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key",
    )
    p.add_argument(
        "--preset", choices=["quick-test", "balanced", "quality"], help="preset under the config's values"
    )
    p.add_argument("--json", action="store_true", help="print events as JSON lines on stdout")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("data", help="inspect a dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("check", help="format, rows kept/dropped with reasons, token-length stats")
    c.add_argument("file")
    c.add_argument(
        "--model",
        default=None,
        help="model whose tokenizer and chat template to use (default: the default model)",
    )
    c.add_argument("--format", default="auto", help="format override (default: detect)")
    c.add_argument("--max-seq-length", type=int, default=1024)
    c.add_argument("--strict", action="store_true", help="any invalid row is an error")
    c.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("hardware", help="OS, CPU, RAM, GPUs and the backend TuneDesk would pick, and why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_hardware)

    p = sub.add_parser("models", help="import and list models")
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="SUBCOMMAND")
    m = msub.add_parser("import", help="a GGUF file or HF folder into the model store")
    m.add_argument("path")
    m.add_argument("--name", default=None, help="name in the store (default: from the file or folder)")
    m.add_argument(
        "--allow-pickle", action="store_true", help="accept pickle .bin weights (converted to safetensors)"
    )
    m.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code to run"
    )
    m = msub.add_parser("list", help="imported models")
    m.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("chat", help="chat with a model, optionally with a trained adapter")
    p.add_argument(
        "--model",
        default=None,
        help="model name or folder (default: the adapter's base model or the default)",
    )
    p.add_argument(
        "--adapter", default=None, metavar="RUN_DIR", help="run folder (or adapter folder) to load"
    )
    p.add_argument("--prompt", default=None, help="one prompt, one reply (otherwise interactive)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "torch", "mlx"], default="auto")
    p.add_argument("--json", action="store_true", help="print token events as JSON lines")
    p.add_argument(
        "--serve", action="store_true", help="worker mode: read JSON commands on stdin (used by the app)"
    )
    p.add_argument(
        "--runs-dir",
        default=None,
        help="folder of run folders, checked for an active training run (memory warning)",
    )
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("export", help="export a trained adapter")
    esub = p.add_subparsers(dest="export_cmd", required=True, metavar="SUBCOMMAND")
    e = esub.add_parser("adapter", help="convert an adapter between PEFT and MLX formats")
    e.add_argument("run_dir", help="run folder or adapter folder")
    e.add_argument("--to", choices=["peft", "mlx"], required=True)
    e.add_argument("--out", default=None, help="output folder")
    p.set_defaults(func=_cmd_export)

    from backends import plan_cli

    plan_cli.add_parser(sub)

    p = sub.add_parser("runs", help="list run folders and their status")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one CLI command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if not sys.stderr.isatty():
        # Into a log file, a pipe or the app's worker, the libraries' tqdm bars (GGUF conversion,
        # weight loading) are carriage-return redraws; our own progress prints plain lines there.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(
            f"run failed ({exc.kind}): {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
            file=sys.stderr,
        )
        return exc.exit_code
    except RunStopped as exc:
        text = str(exc)
        print(text if text.startswith("stopped") else f"stopped: {text}", file=sys.stderr)
        return EXIT_STOPPED
    except TuneDeskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return EXIT_STOPPED
