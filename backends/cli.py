"""The ``tunedesk`` command line (design: ``../shared/design.md``, "Command line").

Exit codes: 0 done; 1 the user's input is wrong (the message names file, line, field); 2 usage;
3 the run failed (NaN, out of memory, worker crash) with the last good checkpoint kept;
130 stopped by the user or a signal, checkpoint saved.

Each subcommand's work lives in the module that owns it; this module only parses arguments,
dispatches, and turns TuneDesk errors into messages and exit codes (never a bare traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence

from backends import paths
from backends.errors import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_STOPPED,
    EXIT_USAGE,
    RunFailed,
    RunStopped,
    TuneDeskError,
    UsageError,
    UserInputError,
)


def _cmd_hardware(args: argparse.Namespace) -> int:
    from backends import hardware

    info = hardware.detect(probe_frameworks=True)
    print(json.dumps(info, indent=2) if args.json else hardware.format_report(info))
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from backends.models_cli import run_models

    return run_models(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from backends.jobs import cli_train

    return cli_train(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from backends.jobs.demo import cli_demo

    return cli_demo(args)


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_cmd == "from-folder":
        from backends.data.folder.build import cli_from_folder

        return cli_from_folder(args)
    from backends.data.check import cli_check

    return cli_check(args)


def _cmd_chat(args: argparse.Namespace) -> int:
    from backends.chat import cli_chat

    return cli_chat(args)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.run_dir == "adapter" and args.adapter_run_dir is not None:
        if args.to is None or args.format is not None:
            raise UsageError("`export adapter RUN_DIR` takes --to peft|mlx (not --format)", field="--to")
        from backends.export import cli_export

        args.run_dir = args.adapter_run_dir
        return cli_export(args)
    if args.adapter_run_dir is not None or args.format is None or args.to is not None:
        raise UsageError(
            "use `export RUN_DIR --format F` or `export adapter RUN_DIR --to peft|mlx`", field="--format"
        )
    from backends.jobs.export.run import cli_export_model

    return cli_export_model(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from backends.jobs.serve import cli_serve

    return cli_serve(args)


def _cmd_forgetting(args: argparse.Namespace) -> int:
    from backends.forgetting.job import cli_forgetting

    return cli_forgetting(args)


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
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue although config.yaml changed since the checkpoint (noted in the events)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train on N processes on this machine (one per GPU; on the CPU, gloo) through torchrun; "
        "training.batch_size is per process",
    )
    p.add_argument("--nnodes", type=int, default=None, metavar="M", help="with --nproc: machines taking part")
    p.add_argument("--node-rank", type=int, default=None, metavar="R", help="this machine's number, 0..M-1")
    p.add_argument(
        "--master", default=None, metavar="HOST:PORT", help="address of machine 0 that the others reach"
    )
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
    c.add_argument(
        "--columns",
        default=None,
        metavar="ROLE=COL,...",
        help="map your columns to the format's fields, e.g. prompt=question,completion=answer "
        "(also system=, chosen=, rejected=, messages=, text=, label=, ...); default: detected",
    )
    c.add_argument("--json", action="store_true")
    c = dsub.add_parser(
        "from-folder",
        help="a dataset from a folder of documents or code (.gitignore respected, secrets removed)",
        description="Walks DIR (a code repository or a documents folder), skips what .gitignore "
        "ignores, vendored and generated folders, lockfiles and binaries, removes secrets and "
        "duplicate chunks, and writes token-sized chunks with their file path and section title.",
    )
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--out", required=True, metavar="FILE.jsonl", help="the dataset to write (replaced)")
    c.add_argument(
        "--mode",
        choices=["text", "qa"],
        default="text",
        help="text: {text} rows for continued pre-training (default); qa: prompt/completion rows to "
        "fill in, each with its source chunk as context",
    )
    c.add_argument(
        "--model", default=None, help="count tokens with this model's tokenizer (default: an estimate)"
    )
    c.add_argument("--chunk-tokens", type=int, default=None, help="most tokens in a chunk (default 512)")
    c.add_argument(
        "--max-file-size", type=int, default=None, help="bytes; larger files are skipped (default 1 MB)"
    )
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("hardware", help="OS, CPU, RAM, GPUs and the backend TuneDesk would pick, and why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_hardware)

    from backends.models_cli import add_models_parser

    add_models_parser(sub)
    p = sub.choices["models"]
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
        "--show-prompt",
        action="store_true",
        help="print the exact prompt the model is fed (special tokens visible) to stderr before each reply",
    )
    p.add_argument(
        "--serve", action="store_true", help="worker mode: read JSON commands on stdin (used by the app)"
    )
    p.add_argument(
        "--runs-dir",
        default=None,
        help="folder of run folders, checked for an active training run (memory warning)",
    )
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser(
        "export",
        help="the tuned model for other tools (merged, GGUF, Ollama, MLX), or the adapter as PEFT/MLX",
        usage="tunedesk export RUN_DIR --format merged|gguf|ollama|mlx [--quant Q] [--out DIR] "
        "[--register NAME] [--json]\n       tunedesk export adapter RUN_DIR --to peft|mlx [--out DIR]",
        description="merged: one Hugging Face folder (transformers, vLLM); gguf: one file for llama.cpp and "
        "LM Studio; ollama: a GGUF plus a Modelfile for `ollama create`; mlx: a fused MLX folder "
        "(Apple silicon). `export adapter` converts the adapter alone.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or its adapter folder)")
    p.add_argument("adapter_run_dir", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--format", choices=["merged", "gguf", "ollama", "mlx"], help="what to write")
    p.add_argument(
        "--quant",
        default=None,
        metavar="Q",
        help="gguf/ollama: q8_0 (almost lossless, half the size of f16: the safe pick for small models), "
        "q4_k_m (a quarter of f16: the usual pick for 1B parameters and up), q5_k_m or q6_k (in between), "
        "f16 or bf16 (unquantised). Default: q4_k_m where the model's layer widths are multiples of 256 "
        "(what these K-quants need), else q8_0. merged/mlx: bf16, f16 or f32 (default: the base model's).",
    )
    p.add_argument(
        "--out", default=None, help="output folder, must not exist (default: RUN_DIR/exports/FORMAT-Q)"
    )
    p.add_argument("--register", default=None, metavar="NAME", help="ollama: also run `ollama create NAME`")
    p.add_argument("--to", choices=["peft", "mlx"], help="`export adapter` only: the adapter format")
    p.add_argument("--json", action="store_true", help="print export_progress/export_finished events")
    p.add_argument(
        "--dry-run", action="store_true", help="check everything and print the size estimate; write nothing"
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("forgetting", help="drift of the tuned model from the base on general probes")
    p.add_argument("run_dir", help="run folder")
    p.add_argument("--quick", action="store_true", help="the short check run after training")
    p.add_argument("--probes", type=int, default=None, help="how many probes (default: all 100)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length in tokens (default 48)")
    p.add_argument("--json", action="store_true", help="print the forgetting event as one JSON line")
    p.set_defaults(func=_cmd_forgetting)

    from backends import plan_cli

    plan_cli.add_parser(sub)

    p = sub.add_parser("serve", help="a local OpenAI-compatible server (/v1/chat/completions, /v1/models)")
    p.add_argument("--model", default=None, help="model name or folder (default: the adapter's base model)")
    p.add_argument("--adapter", default=None, metavar="RUN_DIR", help="run folder (or adapter folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one; the URL is printed)")
    p.add_argument("--backend", choices=["auto", "torch", "mlx"], default="auto")
    p.set_defaults(func=_cmd_serve)

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
    except BrokenPipeError:
        # The reader of our output went away (`tunedesk models list | head -1`): not a crash.
        # Quiet, with the status a shell gives a tool ended by a closed pipe (128 + SIGPIPE).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the catch-all: exit 3 with the log's path, never a bare traceback
        from backends.crash import crash_message, write_crash_log
        from backends.training.oom import is_out_of_memory

        if is_out_of_memory(exc):
            print(
                f"run failed (oom): out of memory: {str(exc).splitlines()[0][:300] if str(exc) else exc!r}",
                file=sys.stderr,
            )
            return EXIT_RUN_FAILED
        print(
            crash_message(exc, write_crash_log(exc, list(argv) if argv is not None else sys.argv[1:])),
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
