"""``tunedesk serve`` with the ``openai`` client: the tiny Llama with an overfit LoRA adapter served
in-process (replies, streaming, stop strings, max_tokens, seeds, the base model beside the tuned
one, errors in OpenAI's shape), and the real command in a child process stopped by SIGINT and
SIGTERM mid-stream. The SmolLM2 acceptance (same greedy reply as ``tunedesk chat``) is in
tests/test_serve_smollm2.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from backends.chat.loader import open_session
from backends.chat.session import Sampling, StreamRequest
from backends.jobs.openai_api import StopMatcher, parse_chat_request
from backends.jobs.serve import make_server
from tests.chat_adapters import ANSWER, PROMPT, make_peft_run
from tests.test_chat_worker import ROOT


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return make_peft_run(tmp_path_factory.mktemp("serve") / "pineapple", tiny_model_dir)


@pytest.fixture(scope="module")
def server(run):
    session = open_session(adapter=run, backend="torch")
    srv = make_server(session, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def direct(server, messages, adapter="tuned", **sampling) -> str:
    """The session's own reply, without HTTP."""
    session = server.service.session
    key = session.default_adapter if adapter == "tuned" else None
    with server.service.lock:
        (reply,) = session.generate(
            [StreamRequest("r", key, messages)], Sampling(**sampling), lambda e, f: None
        )
    return reply.text


def streamed(client, **kwargs) -> tuple[str, list, str | None]:
    pieces, usage, reason = [], None, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return "".join(pieces), pieces, reason, usage


def post(server, body: bytes, path="/chat/completions") -> tuple[int, dict]:
    req = urllib.request.Request(server.url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_models_lists_the_run_and_the_base_model(client, run, tiny_model_dir):
    ids = [m.id for m in client.models.list().data]
    assert ids == [run.name, tiny_model_dir.name]
    assert client.models.retrieve(run.name).id == run.name


def test_greedy_reply_is_the_trained_answer_whole_and_streamed(client, server, run):
    whole = client.chat.completions.create(model=run.name, messages=PROMPT, temperature=0, max_tokens=24)
    reply = whole.choices[0].message.content
    assert reply == direct(server, PROMPT, max_new_tokens=24) and reply.startswith(ANSWER)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 24
    text, pieces, reason, usage = streamed(
        client,
        model=run.name,
        messages=PROMPT,
        temperature=0,
        max_tokens=24,
        stream_options={"include_usage": True},
    )
    assert text == reply and len(pieces) > 1 and reason == "length"
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens > 10


def test_the_base_model_id_answers_without_the_adapter(client, server, tiny_model_dir):
    base = client.chat.completions.create(
        model=tiny_model_dir.name, messages=PROMPT, temperature=0, max_tokens=12
    )
    text = base.choices[0].message.content
    assert text != ANSWER and text == direct(server, PROMPT, adapter=None, max_new_tokens=12)


def test_stop_strings_and_max_tokens(client, run):
    out = client.chat.completions.create(model=run.name, messages=PROMPT, temperature=0, stop=["word is"])
    assert out.choices[0].message.content == "The secret " and out.choices[0].finish_reason == "stop"
    text, _, reason, _ = streamed(client, model=run.name, messages=PROMPT, temperature=0, stop=["pine"])
    assert text == "The secret word is " and reason == "stop"
    short = client.chat.completions.create(model=run.name, messages=PROMPT, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert ANSWER.startswith(short.choices[0].message.content)


def test_sampling_follows_temperature_top_p_and_seed(client, server, tiny_model_dir):
    ask = dict(model=tiny_model_dir.name, messages=PROMPT, max_tokens=12, temperature=1.5)
    a = client.chat.completions.create(seed=7, **ask).choices[0].message.content
    b = client.chat.completions.create(seed=7, **ask).choices[0].message.content
    c = client.chat.completions.create(seed=8, **ask).choices[0].message.content
    assert a == b == direct(server, PROMPT, adapter=None, max_new_tokens=12, temperature=1.5, seed=7)
    assert a != c
    # A tiny nucleus keeps only the most likely token: the greedy reply, whatever the seed.
    greedy = client.chat.completions.create(**{**ask, "temperature": 0}).choices[0].message.content
    nucleus = client.chat.completions.create(top_p=1e-6, seed=3, **ask).choices[0].message.content
    assert nucleus == greedy


def test_concurrent_requests_are_served_one_after_the_other(client, server, run, tiny_model_dir):
    want = {
        m: direct(server, PROMPT, adapter=a, max_new_tokens=16)
        for m, a in ((run.name, "tuned"), (tiny_model_dir.name, None))
    }
    got: dict[str, list[str]] = {m: [] for m in want}

    def ask(model: str, stream: bool) -> None:
        if stream:
            got[model].append(streamed(client, model=model, messages=PROMPT, temperature=0, max_tokens=16)[0])
        else:
            out = client.chat.completions.create(model=model, messages=PROMPT, temperature=0, max_tokens=16)
            got[model].append(out.choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(m, s)) for m in want for s in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == {m: [w, w] for m, w in want.items()}


def test_errors_have_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=PROMPT)
    assert exc.value.code == "model_not_found" and "no-such-model" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=None, messages=PROMPT, n=2)
    assert exc.value.param == "n"
    status, body = post(server, b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = post(server, json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode())
    assert status == 400 and body["error"]["param"] == "messages[0].role"
    status, body = post(server, json.dumps({"messages": PROMPT, "temperature": "hot"}).encode())
    assert status == 400 and body["error"]["param"] == "temperature"
    status, body = post(server, json.dumps({"messages": PROMPT, "temperature": -1}).encode())
    assert status == 400 and body["error"]["param"] == "temperature"
    status, body = post(server, b"{}", path="/completions")
    assert status == 404 and "no route" in body["error"]["message"]


def test_request_parsing_details():
    req = parse_chat_request(
        json.dumps(
            {
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                ],
                "max_completion_tokens": 5,
                "stop": "x",
            }
        ).encode()
    )
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ab"}]
    assert (req.max_tokens, req.stop, req.temperature, req.stream) == (5, ["x"], 1.0, False)


def test_stop_matcher_holds_back_a_possible_stop_across_pieces():
    m = StopMatcher(["<END>", "zz"])
    out = [m.feed(p) for p in ["ab<", "EN", "D>q"]]
    assert out == ["ab", "", ""] and m.stopped and m.flush() == ""
    m = StopMatcher(["<END>"])
    assert [m.feed(p) for p in ["a<", "b"]] == ["a", "<b"] and not m.stopped
    assert m.feed("c<E") == "c" and m.flush() == "<E"


def _start(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "serve", *args, "--port", "0", "--backend", "torch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        log.seek(0)
        text = log.read()
        if " at http://" in text:
            return proc, text.split(" at ", 1)[1].split()[0], log
        time.sleep(0.2)
    proc.kill()
    log.seek(0)
    raise AssertionError(f"the server did not start:\n{log.read()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_stops_cleanly_mid_stream(tmp_path, tiny_model_dir, sig):
    proc, url, log = _start(["--model", str(tiny_model_dir)], tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")  # this machine only, unless --host says otherwise
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        chunks, reasons = [], []
        started = threading.Event()

        def read() -> None:
            story = [{"role": "user", "content": "Write a long story."}]
            for chunk in client.chat.completions.create(
                messages=story, model=tiny_model_dir.name, max_tokens=2000, stream=True, temperature=1
            ):
                chunks.append(chunk)
                started.set()
                reasons.extend(c.finish_reason for c in chunk.choices if c.finish_reason)

        reader = threading.Thread(target=read)
        reader.start()
        assert started.wait(60)
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        reader.join(30)
        # The reply cut short by the stop says so ("abort"), not "stop" as a finished one would.
        assert not reader.is_alive() and reasons == ["abort"] and len(chunks) < 2000
        log.seek(0)
        text = log.read()
        assert "stopped" in text and "Traceback" not in text and "terminate" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
