"""``tunedesk demo``: the main job end to end on the embedded default model and the sample data.

1. Imports SmolLM2-135M-Instruct on first use (``backends.models.resolve_model``).
2. Trains LoRA with ``resources/demo/demo.yaml`` through the same ``run_training`` as
   ``tunedesk train`` (so it leaves an ordinary run folder, chat-able and resumable).
3. Asks the held-out questions (``resources/demo/support_heldout.jsonl``, none of them in the
   training rows) of the base model and of the tuned one, greedy, through the chat session (one
   copy of the base weights, the adapter switched on and off), and prints the replies side by side
   with how many of each show the house style: the sample data's fixed greeting and sign-off
   (``resources/demo/house_style.json``, written by ``make_sample_data.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from backends import paths
from backends.config import RunConfig, load_config
from backends.errors import EXIT_OK, RunStopped
from backends.events import encode, make_event
from backends.runs import RunDir

REPORT_EVERY = 15.0  # seconds between progress lines while the replies are generated
MAX_NEW_TOKENS = 80  # a house-style reply is at most about 65 tokens; base replies are cut here


def demo_dir() -> Path:
    """``resources/demo`` (config, sample data, held-out prompts, house style)."""
    return paths.resources_dir() / "demo"


def demo_config(steps: int | None = None) -> RunConfig:
    """The demo's run config (``demo.yaml``), with ``steps`` as ``training.max_steps`` if given."""
    overrides = [f"training.max_steps={steps}"] if steps else None
    return load_config(demo_dir() / "demo.yaml", overrides)


def house_style() -> tuple[str, str]:
    """(greeting, sign-off) of the sample data."""
    style = json.loads((demo_dir() / "house_style.json").read_text(encoding="utf-8"))
    return style["greeting"], style["signoff"]


def has_house_style(reply: str, greeting: str, signoff: str) -> bool:
    """True when ``reply`` opens with the greeting and closes with the sign-off."""
    text = reply.strip()
    return text.startswith(greeting) and text.endswith(signoff)


def heldout_prompts() -> list[str]:
    """The held-out questions, in file order."""
    lines = (demo_dir() / "support_heldout.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def compare_replies(
    run: RunDir, config: RunConfig, prompts: list[str], report_every: float | None = None
) -> list[dict[str, Any]]:
    """Greedy replies of the base and the tuned model to each prompt: a list of
    {"prompt", "base", "tuned", "base_style", "tuned_style"}. With ``report_every`` (seconds), a
    line on stderr at most that often says how many tokens have been generated of the most
    possible (2 x prompts x MAX_NEW_TOKENS), so a slow machine does not look hung."""
    from backends.chat.loader import open_session
    from backends.chat.session import Sampling, StreamRequest

    greeting, signoff = house_style()
    session = open_session(config.model, adapter=run.path, backend=config.backend)
    tuned = session.default_adapter
    requests = []
    for i, prompt in enumerate(prompts):
        messages = [{"role": "user", "content": prompt}]
        requests += [StreamRequest(f"base-{i}", None, messages), StreamRequest(f"tuned-{i}", tuned, messages)]
    most = len(requests) * MAX_NEW_TOKENS
    seen = {"tokens": 0, "said": time.monotonic()}

    def on_event(event: str, fields: dict) -> None:
        if event != "token" or report_every is None:
            return
        seen["tokens"] += 1
        if time.monotonic() - seen["said"] >= report_every:
            seen["said"] = time.monotonic()
            print(f"  {seen['tokens']} of at most {most} reply tokens generated", file=sys.stderr, flush=True)

    replies = session.generate(requests, Sampling(max_new_tokens=MAX_NEW_TOKENS), on_event)
    rows = []
    for i, prompt in enumerate(prompts):
        base, tuned_reply = replies[2 * i].text.strip(), replies[2 * i + 1].text.strip()
        rows.append(
            {
                "prompt": prompt,
                "base": base,
                "tuned": tuned_reply,
                "base_style": has_house_style(base, greeting, signoff),
                "tuned_style": has_house_style(tuned_reply, greeting, signoff),
            }
        )
    return rows


def side_by_side(rows: list[dict[str, Any]], width: int | None = None) -> str:
    """The replies as two wrapped columns per prompt (base | tuned) and a summary line."""
    width = width or max(60, min(shutil.get_terminal_size((110, 24)).columns, 140))
    col = (width - 3) // 2
    out = []
    for i, row in enumerate(rows, 1):
        out.append("=" * width)
        out.append(textwrap.shorten(f"[{i}] {row['prompt']}", width))
        left_title = f"BASE  (house style: {'yes' if row['base_style'] else 'no'})"
        right_title = f"TUNED (house style: {'yes' if row['tuned_style'] else 'no'})"
        out.append(f"{left_title:<{col}} | {right_title}")
        out.append(f"{'-' * col}-+-{'-' * col}")
        left = _wrap(row["base"], col)
        right = _wrap(row["tuned"], col)
        for n in range(max(len(left), len(right))):
            a = left[n] if n < len(left) else ""
            b = right[n] if n < len(right) else ""
            out.append(f"{a:<{col}} | {b}")
    out.append("=" * width)
    out.append(summary_line(rows))
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width) or [""]
    return lines


def summary_line(rows: list[dict[str, Any]]) -> str:
    """``House style ... base 0/10, tuned 9/10``."""
    n = len(rows)
    base = sum(r["base_style"] for r in rows)
    tuned = sum(r["tuned_style"] for r in rows)
    return f"House style (greeting and sign-off) in held-out replies: base model {base}/{n}, tuned model {tuned}/{n}"


def cli_demo(args: argparse.Namespace) -> int:
    """``tunedesk demo [--steps N] [--json]``: train, then compare base and tuned replies.

    With ``--json`` the training events and one ``log`` event per compared prompt (fields
    ``prompt``, ``base``, ``tuned``, ``base_style``, ``tuned_style``) go to stdout as JSON lines.
    Returns 0; training failures raise as in ``tunedesk train``.
    """
    from backends.jobs.train import run_training

    start = time.monotonic()
    config = demo_config(args.steps)
    first_use = not (paths.models_dir() / config.model / "config.json").is_file()
    try:
        run = run_training(config, json_stdout=args.json)
    except RunStopped as exc:
        if "--resume" not in str(exc):
            raise
        raise RunStopped(
            f"{exc} (that finishes the training only); or run `tunedesk demo` again to start over"
        ) from exc
    finished = [e for e in run.events() if e["event"] == "run_finished"]
    trained = float(finished[-1]["elapsed"]) if finished else time.monotonic() - start
    setup = max(0.0, time.monotonic() - start - trained)
    if not args.json:
        print(
            f"\nTrained {config.training.max_steps} steps in {trained:.0f} s (after {setup:.0f} s of "
            f"setup: {'first-use model import, ' if first_use else ''}data, model loading). "
            f"Asking {len(heldout_prompts())} held-out questions...",
            file=sys.stderr,
        )
    rows = compare_replies(run, config, heldout_prompts(), report_every=None if args.json else REPORT_EVERY)
    total = time.monotonic() - start
    if args.json:
        for row in rows:
            print(encode(make_event("log", level="info", message="demo reply", **row)), flush=True)
        print(
            encode(
                make_event(
                    "log",
                    level="info",
                    message=summary_line(rows),
                    run_dir=str(run.path),
                    base_style=sum(r["base_style"] for r in rows),
                    tuned_style=sum(r["tuned_style"] for r in rows),
                    prompts=len(rows),
                    seconds=round(total, 1),
                )
            ),
            flush=True,
        )
    else:
        print(side_by_side(rows))
        print(
            f"Demo finished in {total / 60:.1f} min (training {trained / 60:.1f} min). Run folder: {run.path}"
        )
        print(f"Chat with the tuned model: tunedesk chat --adapter {run.path}")
        print(f"Use it in Ollama, llama.cpp or LM Studio: tunedesk export {run.path} --format ollama")
        if importlib.util.find_spec("llama_cpp") is None:
            print(
                "  (GGUF and Ollama export first need `bash packaging/install.sh export`: it builds llama.cpp)"
            )
    return EXIT_OK
