"""``tunedesk serve``: a local OpenAI-compatible server on the same chat session as ``tunedesk chat``.

``POST /v1/chat/completions`` (whole replies, or Server-Sent Events with ``"stream": true``) and
``GET /v1/models`` (``/v1/models/{id}``). The served ids are the run's name (the base model with the
adapter) and the base model's name (without it), so one loaded copy of the weights answers as both.
Built on the standard library's ``ThreadingHTTPServer``: each connection has a thread, and one lock
serialises generation (a second request waits for the first reply to end). Bound to 127.0.0.1
unless ``--host`` says otherwise. Ctrl-C or SIGTERM stops replies in progress after their current
token, closes the connections and exits 0.

The wire format (parsing, chunks, errors) is ``backends.jobs.openai_api``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from backends.chat.session import ChatSession, StreamRequest, render_prompt
from backends.errors import EXIT_OK, RunFailed, UserInputError
from backends.jobs import openai_api as api

MAX_BODY = 16 * 2**20  # bytes; a chat request is a few KB
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(model_dir: str | Path) -> int | None:
    """The model's context window in tokens, from its ``config.json`` (None when it names none)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in CONTEXT_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


class ChatService:
    """The served models and the request logic, apart from HTTP.

    ``models``: id -> adapter key (None: the base model); the first id is the default for a request
    that names no model. ``closing`` makes every reply in progress end after its current token.
    """

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.lock = threading.RLock()  # one generation at a time; the tokenizer is not thread-safe
        self.closing = threading.Event()
        self.created = int(time.time())
        self.models: dict[str, str | None] = {}
        key = session.default_adapter
        if key is not None:
            self.models[session.adapters[key].name] = key
        # The base model by its name (a folder given by path: the folder's name).
        self.models.setdefault(Path(session.model_name or session.model_dir).name, None)
        self.context = context_length(session.model_dir)

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter key of the model id ``model`` (None: the default). Raises ApiError 404."""
        if model is None:
            return next(iter(self.models.values()))
        if model not in self.models:
            raise api.ApiError(
                404,
                f"The model '{model}' does not exist here; this server has: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return self.models[model]

    def prepare(self, req: api.ChatRequest) -> tuple[str, str | None, int, int]:
        """(model id, adapter key, prompt tokens, max new tokens) of a request, checked before any
        token is generated: the template renders the messages and the reply fits the context."""
        key = self.adapter_for(req.model)
        model = req.model or next(iter(self.models))
        try:
            with self.lock:
                prompt = render_prompt(
                    self.session.engine.tokenizer, req.messages, self.session.template_for(key)
                )
        except UserInputError as exc:
            raise api.ApiError.from_user_error(exc) from None
        n = len(prompt)
        room = (self.context - n) if self.context else None
        if room is not None and (room < 1 or (req.max_tokens or 0) > room):
            raise api.ApiError(
                400,
                f"This model's maximum context length is {self.context} tokens; the messages take {n}"
                + (f" and max_tokens asks for {req.max_tokens} more" if req.max_tokens else ""),
                param="messages",
                code="context_length_exceeded",
            )
        return model, key, n, req.max_tokens or room or 4096

    def generate(
        self, req: api.ChatRequest, on_text: Callable[[str], None], gone: Callable[[], bool] = lambda: False
    ) -> tuple[str, int, int]:
        """Generate one reply, passing each piece of text to ``on_text(str)`` as it is final;
        returns (finish_reason, prompt tokens, completion tokens). ``gone()``: the client left."""
        matcher = api.StopMatcher(req.stop)

        def emit(event: str, fields: dict[str, Any]) -> None:
            if event == "token":
                text = matcher.feed(fields["text"])
                if text:
                    on_text(text)

        def should_stop() -> bool:
            return matcher.stopped or self.closing.is_set() or gone()

        with self.lock:
            _, key, _, max_new = self.prepare(req)
            sampling = req.sampling(max_new)
            (reply,) = self.session.generate(
                [StreamRequest("reply", key, req.messages)], sampling, emit, should_stop=should_stop
            )
        tail = matcher.flush()
        if tail:
            on_text(tail)
        if self.closing.is_set() and not matcher.stopped and reply.finish_reason not in ("eos", "length"):
            # Cut short by the server stopping: say so ("abort", as vLLM does), never "stop".
            return "abort", reply.prompt_tokens, reply.tokens
        return api.finish_reason(reply.finish_reason, matcher.stopped), reply.prompt_tokens, reply.tokens


def as_api_error(exc: Exception) -> api.ApiError:
    """The HTTP error for an exception: 400 for bad input, 500 (logged with its traceback when it
    is not a TuneDesk error) for the rest."""
    if isinstance(exc, api.ApiError):
        return exc
    if isinstance(exc, UserInputError):
        return api.ApiError.from_user_error(exc)
    if isinstance(exc, RunFailed):
        return api.ApiError(500, str(exc), code=exc.kind, kind="server_error")
    traceback.print_exc()
    return api.ApiError(500, f"internal error: {exc!r}", kind="server_error")


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection; ``self.server.service`` answers."""

    protocol_version = "HTTP/1.1"
    server_version = "TuneDesk"

    @property
    def service(self) -> ChatService:
        return self.server.service  # type: ignore[attr-defined]

    # --- plumbing ---
    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, exc: api.ApiError) -> None:
        self._send_json(exc.status, exc.body())

    def _chunk(self, data: bytes) -> None:
        """One piece of a chunked (HTTP/1.1) body; an empty one ends it."""
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload: dict[str, Any] | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        self._chunk(f"data: {text}\n\n".encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Access log on stderr: client, request line, status."""
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    # --- routes ---
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        """``/v1/models`` and ``/v1/models/{id}``."""
        path = self.path.split("?", 1)[0].rstrip("/")
        service = self.service
        if path == "/v1/models":
            self._send_json(200, api.model_list(list(service.models), service.created))
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            try:
                service.adapter_for(name)
            except api.ApiError as exc:
                self._error(exc)
                return
            self._send_json(200, api.model_list([name], service.created)["data"][0])
        else:
            self._error(api.ApiError(404, f"no route GET {path or '/'} (try /v1/models)"))

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        """``/v1/chat/completions``."""
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._error(api.ApiError(404, f"no route POST {path or '/'} (try /v1/chat/completions)"))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._error(api.ApiError(413 if length > MAX_BODY else 400, "bad or too large Content-Length"))
            return
        try:
            req = api.parse_chat_request(self.rfile.read(length))
            if req.stream:
                self._stream(req)
            else:
                self._whole(req)
        except Exception as exc:  # every failure is an answer in OpenAI's shape, never a dropped connection
            self._error(as_api_error(exc))

    def _whole(self, req: api.ChatRequest) -> None:
        pieces: list[str] = []
        model = req.model or next(iter(self.service.models))
        reason, n_prompt, n_reply = self.service.generate(req, pieces.append)
        self._send_json(200, api.completion(api.new_id(), model, "".join(pieces), reason, n_prompt, n_reply))

    def _stream(self, req: api.ChatRequest) -> None:
        model, *_ = self.service.prepare(req)  # a bad request is a 400, before the stream starts
        cid, created = api.new_id(), int(time.time())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gone = threading.Event()

        def send(delta: dict[str, Any], reason: str | None = None) -> None:
            if gone.is_set():
                return
            try:
                self._event(api.chunk(cid, model, created, delta, reason))
            except OSError:  # the client closed the connection: end the reply
                gone.set()

        send({"role": "assistant", "content": ""})
        try:
            reason, n_prompt, n_reply = self.service.generate(
                req, lambda text: send({"content": text}), gone.is_set
            )
        except Exception as exc:  # headers are sent: the error goes as the stream's last event
            if not gone.is_set():
                self._event(as_api_error(exc).body())
                self._chunk(b"")
            return
        send({}, reason)
        if gone.is_set():
            self.close_connection = True
            return
        if req.include_usage:
            self._event(api.chunk(cid, model, created, {}, usage_=api.usage(n_prompt, n_reply)))
        self._event("[DONE]")
        self._chunk(b"")


class Server(ThreadingHTTPServer):
    """The HTTP server holding the ``ChatService``.

    ``close()`` ends it cleanly from another thread than the serving one: replies in progress stop
    after their current token, open connections are closed, and every connection's thread is
    joined, so that the model is freed by the thread that owns the server, never by a thread that
    the interpreter ends at exit (PyTorch aborts when that happens while a tensor is freed).
    """

    daemon_threads = False  # server_close() joins the connection threads

    def __init__(self, service: ChatService, host: str, port: int) -> None:
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        """The base URL clients use (``http://HOST:PORT/v1``)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handle one connection, remembering its socket so that ``close()`` can end it."""
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is no error; anything else is logged in one line."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            print(f"error serving {client_address}: {exc!r}", file=sys.stderr, flush=True)

    def start(self) -> threading.Thread:
        """Serve on a new thread; returns it."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="serve"
        )
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop serving and end every connection (idempotent; not from the serving thread)."""
        self.service.closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with self.service.lock:  # a reply in progress ends after its current token
            pass
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)  # a thread waiting for a next request reads the end
        self.server_close()


def make_server(session: ChatSession, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A server for ``session`` bound to ``host:port`` (port 0: a free one). Raises UserInputError
    when the address cannot be bound (in use, or not this machine's)."""
    try:
        return Server(ChatService(session), host, port)
    except OSError as exc:
        raise UserInputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            field="--port" if exc.errno == 98 else "--host",
            hint="choose another --port (0 picks a free one)",
        ) from None


def cli_serve(args: argparse.Namespace) -> int:
    """``tunedesk serve``: load the model (and adapter) as ``tunedesk chat`` does, then answer
    until Ctrl-C or SIGTERM; returns 0. Bad input (model, adapter, address) raises UserInputError."""
    from backends.chat.loader import open_session

    def say(level: str, message: str) -> None:
        print(f"{level}: {message}" if level != "info" else message, file=sys.stderr, flush=True)

    if args.port < 0 or args.port > 65535:
        raise UserInputError(f"must be 0..65535 (got {args.port})", field="--port")
    session = open_session(args.model, args.adapter, args.backend, say=say)
    server = make_server(session, args.host, args.port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    ids = ", ".join(server.service.models)
    print(f"serving {ids} at {server.url} (OpenAI-compatible; Ctrl-C stops)", file=sys.stderr, flush=True)
    server.start()
    try:
        while not stop.wait(0.5):  # the main thread stays free to take the signal
            pass
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", file=sys.stderr, flush=True)
    return EXIT_OK
