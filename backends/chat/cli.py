"""``tunedesk chat``: one reply (``--prompt``), an interactive session, or the worker (``--serve``).

The reply streams to stdout as it is generated; statistics (tokens, tokens/s, time to first token)
go to stderr. With ``--json`` stdout carries the ``token`` and ``reply_finished`` events instead.
``--show-prompt`` prints, to stderr before each reply, the exact prompt text the model is fed
(the run's template, system prompt and BOS rule applied; special tokens visible).
In the interactive session Ctrl-C stops the reply being written (a second Ctrl-C at the prompt, or
Ctrl-D, or ``/quit``, ends the session); ``/reset`` clears the history, ``/system TEXT`` sets the
system prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from backends.chat.session import ChatSession, Reply, Sampling, StreamRequest, with_system
from backends.errors import EXIT_OK, EXIT_STOPPED
from backends.events import EventSink

HELP = "commands: /reset (new conversation), /system TEXT (system prompt), /quit (or Ctrl-D)"


@contextlib.contextmanager
def _ctrl_c_stops(session: ChatSession) -> Iterator[None]:
    """While a reply streams, Ctrl-C stops it (between two tokens) instead of ending the program."""
    try:
        old = signal.signal(signal.SIGINT, lambda *_: session.request_stop())
    except ValueError:  # not the main thread: leave SIGINT alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _stats(reply: Reply) -> str:
    ttft = f"{reply.time_to_first_token:.2f} s" if reply.time_to_first_token is not None else "-"
    tps = f"{reply.tokens_per_second:.1f}" if reply.tokens_per_second is not None else "-"
    why = {"eos": "", "length": ", max new tokens reached", "stop": ", stopped"}[reply.finish_reason]
    return f"[{reply.tokens} tokens, {tps} tokens/s, first token after {ttft}{why}]"


def reply_once(
    session: ChatSession,
    messages: list[dict[str, str]],
    sampling: Sampling,
    *,
    json_out: bool,
    system: str | None = None,
    show_prompt: bool = False,
) -> Reply:
    """Generate one reply to ``messages`` and stream it to stdout (text, or JSON events).
    ``show_prompt``: first print the exact prompt text the model is fed (special tokens visible,
    BOS included where added) and its token count to stderr."""
    sink = EventSink(None, stdout=sys.stdout) if json_out else None
    request = StreamRequest("reply", session.default_adapter, with_system(messages, system))
    if show_prompt:
        rendered = session.prompt(request)
        print(
            f"--- prompt ({len(rendered.input_ids)} tokens) ---\n{rendered.text}\n--- end of prompt ---",
            file=sys.stderr,
            flush=True,
        )

    def emit(event: str, fields: dict[str, Any]) -> None:
        if sink is not None:
            sink.emit(event, **fields)
        elif event == "token":
            sys.stdout.write(fields["text"])
            sys.stdout.flush()

    with _ctrl_c_stops(session):
        (reply,) = session.generate([request], sampling, emit)
    if sink is None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(_stats(reply), file=sys.stderr, flush=True)
    return reply


def interactive(
    session: ChatSession, sampling: Sampling, *, system: str | None, json_out: bool, show_prompt: bool = False
) -> int:
    """A conversation on the terminal until /quit, Ctrl-D or Ctrl-C at the prompt."""
    history: list[dict[str, str]] = []
    print(HELP, file=sys.stderr)
    while True:
        try:
            sys.stderr.write("you> ")  # the prompt goes to stderr: with --json stdout holds events only
            sys.stderr.flush()
            line = input()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return EXIT_OK
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return EXIT_OK
        if text == "/reset":
            history = []
            print("(new conversation)", file=sys.stderr)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            print(f"(system prompt: {system or 'none'})", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(HELP, file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        if not json_out:
            sys.stdout.write("model> ")
        reply = reply_once(
            session, history, sampling, json_out=json_out, system=system, show_prompt=show_prompt
        )
        history.append({"role": "assistant", "content": reply.text})


def cli_chat(args: argparse.Namespace) -> int:
    """``tunedesk chat``: see the module docstring. Returns 0, or 130 when the one reply of
    ``--prompt`` was stopped with Ctrl-C. Bad input raises UserInputError (exit 1) naming the path
    or field before the model is loaded."""
    if args.serve:
        from backends.chat.worker import serve

        return serve(args)
    from backends.chat.loader import open_session

    sampling = Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )

    def say(level: str, message: str) -> None:
        print(f"{level}: {message}" if level != "info" else message, file=sys.stderr, flush=True)

    session = open_session(
        args.model, args.adapter, args.backend, runs_dir=getattr(args, "runs_dir", None), say=say
    )
    if args.prompt is not None:
        reply = reply_once(
            session,
            [{"role": "user", "content": args.prompt}],
            sampling,
            json_out=args.json,
            system=args.system,
            show_prompt=getattr(args, "show_prompt", False),
        )
        return EXIT_STOPPED if reply.finish_reason == "stop" else EXIT_OK
    return interactive(
        session,
        sampling,
        system=args.system,
        json_out=args.json,
        show_prompt=getattr(args, "show_prompt", False),
    )
