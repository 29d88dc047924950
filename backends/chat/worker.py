"""The chat worker (``tunedesk chat --serve``): JSON commands on stdin, JSON-line events on stdout.

Commands, one JSON object per line:

- ``{"cmd": "generate", "id": "r1", "messages": [...], "system": "...", "adapter": RUN_DIR|null,
  "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256, "repetition_penalty": 1.1,
  "seed": 0}``: one reply. Without ``adapter`` the current one (``set_adapter``) is used; ``null``
  means the base model. ``"streams": [{"id": "base", "adapter": null}, {"id": "tuned",
  "adapter": RUN_DIR, "messages": [...]}]`` instead produces several replies that stream together
  (side by side; each stream may carry its own history in ``messages``).
- ``{"cmd": "stop"}``: ends every reply requested before it, after its current token.
- ``{"cmd": "set_adapter", "adapter": RUN_DIR|null}``: load (no merge) and make current; the
  base model stays loaded. Answers ``chat_ready``.
- ``{"cmd": "validation_prompts", "run": RUN_DIR, "n": 5}``: answers ``validation_prompts``.
- ``{"cmd": "quit"}`` (or the end of stdin): stop and exit 0.

Events (``backends.events``; every one carries ``request``, the command's ``id``, when it has one):
``chat_ready`` (``model``, ``backend``, ``device``, ``adapter``), ``token`` (``text``,
``stream``), ``reply_finished`` (``tokens``, ``tokens_per_second``, ``time_to_first_token``,
``stream``, ``text``, ``finish_reason``, ...), ``validation_prompts`` (``run_dir``,
``prompts``), ``chat_error`` (``kind``: input | model | oom | crash, ``message``, ``hint``),
and ``log`` (``level``, ``message``; e.g. the memory warning).

Stop works while a reply streams: a reader thread takes commands off stdin as they arrive, and a
``stop`` is seen by the token loop between two tokens. Libraries' stray prints go to stderr so
stdout holds events only.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import traceback
from typing import Any, TextIO

from backends.chat.session import ChatSession, Sampling, StreamRequest, check_messages, with_system
from backends.errors import EXIT_OK, EXIT_USER_INPUT, RunFailed, UserInputError
from backends.events import EventSink

_UNSET = object()


class CommandReader:
    """Reads commands on a thread; numbers them; a ``stop`` marks every earlier command stopped."""

    def __init__(self, stream: TextIO) -> None:
        self.queue: queue.Queue[tuple[int, dict[str, Any] | None, str | None]] = queue.Queue()
        self.stopped_before = 0  # commands with a number below this are stopped
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="chat-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        for line in self._stream:
            if not line.strip():
                continue
            seq += 1
            try:
                cmd = json.loads(line)
                if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                    raise ValueError("expected an object with a 'cmd' string")
            except ValueError as exc:
                self.queue.put((seq, None, f"bad command line {line.strip()[:200]!r}: {exc}"))
                continue
            if cmd["cmd"] in ("stop", "quit"):
                self.stopped_before = seq
            if cmd["cmd"] != "stop":
                self.queue.put((seq, cmd, None))
        self.stopped_before = seq + 1
        self.queue.put((seq + 1, {"cmd": "quit"}, None))


class ChatWorker:
    """Runs commands against one ``ChatSession`` and reports through ``sink``."""

    def __init__(self, session: ChatSession, sink: EventSink) -> None:
        self.session = session
        self.sink = sink

    def ready(self, request: str | None = None) -> None:
        """Emit ``chat_ready`` (model, backend, device, current adapter)."""
        engine = self.session.engine
        key = self.session.default_adapter
        info = self.session.adapters.get(key) if key else None
        self.sink.emit(
            "chat_ready",
            model=self.session.model_name or str(self.session.model_dir),
            model_dir=str(self.session.model_dir),
            backend=engine.name,
            device=engine.device,
            adapter=str(info.run_dir or info.path) if info else None,
            **({"request": request} if request else {}),
        )

    def error(self, exc: BaseException, request: str | None) -> None:
        """Report an error of one command as ``chat_error``; the worker keeps serving."""
        extra = {"request": request} if request else {}
        if isinstance(exc, UserInputError):
            self.sink.emit("chat_error", kind="input", message=str(exc), hint=exc.hint or "", **extra)
        elif isinstance(exc, RunFailed):
            kind = exc.kind if exc.kind in ("oom", "model") else "crash"
            self.sink.emit("chat_error", kind=kind, message=exc.message, hint=exc.hint, **extra)
        else:
            traceback.print_exc(file=sys.stderr)
            self.sink.emit(
                "chat_error",
                kind="crash",
                message=f"{type(exc).__name__}: {exc}",
                hint="see the worker's log (stderr) for the traceback",
                **extra,
            )

    def requests(self, cmd: dict[str, Any]) -> list[StreamRequest]:
        """The streams of a ``generate`` command (see the module docstring)."""
        system = cmd.get("system")
        if system is not None and not isinstance(system, str):
            raise UserInputError("must be a string", field="system")
        default_adapter = cmd.get("adapter", _UNSET)
        streams = cmd.get("streams")
        if streams is None:
            streams = [{"id": cmd.get("id") or "reply"}]
            if default_adapter is not _UNSET:
                streams[0]["adapter"] = default_adapter
        if not isinstance(streams, list) or not streams:
            raise UserInputError("must be a non-empty list of {id, adapter}", field="streams")
        out = []
        for i, s in enumerate(streams):
            if not isinstance(s, dict):
                raise UserInputError("must be an object", field=f"streams[{i}]")
            adapter = s.get("adapter", _UNSET)
            if adapter is _UNSET:
                adapter = self.session.default_adapter
            if adapter is not None and not isinstance(adapter, str):
                raise UserInputError("must be a path or null", field=f"streams[{i}].adapter")
            messages = check_messages(s.get("messages", cmd.get("messages")))
            out.append(StreamRequest(str(s.get("id", f"stream{i}")), adapter, with_system(messages, system)))
        if len({r.id for r in out}) != len(out):
            raise UserInputError("stream ids must differ", field="streams")
        return out

    def handle(self, seq: int, cmd: dict[str, Any], reader: CommandReader) -> bool:
        """Run one command; False for ``quit``."""
        name = cmd["cmd"]
        request = cmd.get("id")
        request = str(request) if request is not None else None
        extra = {"request": request} if request else {}
        try:
            if name == "quit":
                return False
            if name == "generate":
                sampling = Sampling.from_dict(cmd)
                reqs = self.requests(cmd)
                self.session.generate(
                    reqs,
                    sampling,
                    lambda event, fields: self.sink.emit(event, **fields, **extra),
                    should_stop=lambda: reader.stopped_before > seq,
                )
            elif name == "set_adapter":
                adapter = cmd.get("adapter")
                if adapter is not None and not isinstance(adapter, str):
                    raise UserInputError("must be a path or null", field="adapter")
                self.session.set_adapter(adapter)
                self.ready(request)
            elif name == "validation_prompts":
                from backends.chat.validation import validation_prompts

                run = cmd.get("run")
                if not isinstance(run, str):
                    raise UserInputError("must be a run folder", field="run")
                n = cmd.get("n", 5)
                if not isinstance(n, int) or isinstance(n, bool):
                    raise UserInputError(f"must be a whole number (got {n!r})", field="n")
                result = validation_prompts(run, self.session.engine.tokenizer, n)
                self.sink.emit("validation_prompts", run_dir=run, **result, **extra)
            else:
                raise UserInputError(
                    f"unknown command {name!r} (generate, stop, set_adapter, validation_prompts, quit)",
                    field="cmd",
                )
        except Exception as exc:  # every failure of one command is reported, the worker goes on
            self.error(exc, request)
        return True


def serve(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``tunedesk chat --serve``: load the model (and ``--adapter``), emit ``chat_ready``, then
    run commands until ``quit`` or the end of stdin. Returns 0, or 1 when the model or adapter
    given on the command line cannot be loaded (after a ``chat_error`` event)."""
    from backends.chat.loader import open_session

    stdin = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the event stream
    sink = EventSink(None, stdout=out)
    try:
        try:
            session = open_session(
                args.model,
                args.adapter,
                args.backend,
                runs_dir=getattr(args, "runs_dir", None),
                say=lambda level, message: sink.emit("log", level=level, message=message),
            )
        except UserInputError as exc:
            sink.emit("chat_error", kind="input", message=str(exc), hint=exc.hint or "")
            return EXIT_USER_INPUT
        worker = ChatWorker(session, sink)
        worker.ready()
        reader = CommandReader(stdin)
        while True:
            seq, cmd, problem = reader.queue.get()
            if cmd is None:
                sink.emit("chat_error", kind="input", message=problem or "bad command", hint="")
                continue
            if not worker.handle(seq, cmd, reader):
                return EXIT_OK
    finally:
        sys.stdout = saved_stdout
