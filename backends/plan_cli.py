"""``tunedesk plan``: the memory plan of a run config (``backends.plan``) in words or as JSON.

The model is found as training finds it (an imported name or an HF folder; the default model is
imported on first use, as ``tunedesk train`` would); only its ``config.json`` is read.
"""

from __future__ import annotations

import argparse
import json

from backends import model_shape, plan
from backends.config import load_config
from backends.errors import EXIT_OK, UserInputError


def format_plan(result: plan.MemoryPlan) -> str:
    """The plan in words: verdict, peak against free memory, the breakdown and any suggestions."""
    gb = plan.GB
    words = {"fits": "fits", "tight": "tight (may fit)", "does_not_fit": "does not fit"}[result.verdict]
    lines = [
        f"verdict:   {words}",
        f"peak:      {result.peak / gb:.2f} GB on {result.target}"
        + (f" (+ {result.reserve / gb:.2f} GB reserve)" if result.reserve else ""),
        f"available: {(result.available or 0) / gb:.2f} GB",
        f"settings:  {json.dumps(result.settings)}",
        "breakdown:",
    ]
    for part, value in result.breakdown.items():
        note = "" if part in plan.TRAIN_PARTS else "  (chat, not in the training peak)"
        lines.append(f"  {part:14s} {value / gb:8.3f} GB{note}")
    lines.append(f"chat peak: {result.chat_peak / gb:.2f} GB (unquantised base + KV cache)")
    for s in result.suggestions:
        sets = " ".join(f"--set {k}={v}" for k, v in s["changes"].items())
        lines.append(f"suggestion: {s['label']}: {s['peak'] / gb:.2f} GB  ({sets})")
    return "\n".join(lines)


def cli_plan(args: argparse.Namespace) -> int:
    """``tunedesk plan --config F [--set k=v ...] [--target T] [--memory-gb G] [--json]``."""
    config = load_config(args.config, args.overrides, preset=args.preset)
    model_dir = model_shape.find_model_dir(config.model)
    if model_dir is None:
        from backends import models

        model_dir = models.resolve_model(config.model, progress=models.print_progress)
    try:
        model_config = model_shape.read_model_config(model_dir)
        available = int(args.memory_gb * plan.GB) if args.memory_gb is not None else None
        result = plan.plan_memory(config, model_config, args.target, available)
    except ValueError as exc:
        raise UserInputError(str(exc), file=model_dir / "config.json", field="model") from None
    print(json.dumps(result.to_json(), indent=2) if args.json else format_plan(result))
    return EXIT_OK


def _gigabytes(text: str) -> float:
    """``--memory-gb``: a positive number of GB (10**9 bytes); anything else is a usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of GB, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``plan`` on the CLI's subparsers."""
    p = sub.add_parser("plan", help="predicted peak memory of a run, and whether it fits here")
    p.add_argument("--config", metavar="FILE.yaml", help="run config (YAML; default: all defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--preset", choices=["quick-test", "balanced", "quality"])
    p.add_argument("--target", choices=plan.TARGETS, help="backend and device (default: this machine's)")
    p.add_argument(
        "--memory-gb", type=_gigabytes, help="plan against this much free memory instead of this machine's"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cli_plan)
