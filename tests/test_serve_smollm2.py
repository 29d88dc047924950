"""Acceptance of ``tunedesk serve`` on the real SmolLM2-135M-Instruct with a trained LoRA adapter
(slow): the ``openai`` client pointed at the server gets, whole and streamed, the same greedy reply
as ``tunedesk chat --prompt`` for the same run, prompt and token cap."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest

from backends.events import parse_line
from tests.chat_adapters import ANSWER, PROMPT, make_peft_run
from tests.test_chat_worker import ROOT
from tests.test_serve import _start

pytestmark = pytest.mark.slow

PROMPTS = [PROMPT[0]["content"], "What is the capital of France?"]
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_dir):
    return make_peft_run(tmp_path_factory.mktemp("serve-smollm2") / "secret", smollm2_dir, steps=20, lr=2e-3)


def chat_reply(run, prompt: str) -> dict:
    """The ``reply_finished`` event of ``tunedesk chat --adapter RUN --prompt PROMPT --json``."""
    out = subprocess.run(
        [sys.executable, "-m", "desktop", "chat", "--adapter", str(run), "--prompt", prompt, "--json"]
        + ["--max-new-tokens", str(MAX_TOKENS), "--backend", "torch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    events = [e for e in map(parse_line, out.stdout.splitlines()) if e]
    return next(e for e in events if e["event"] == "reply_finished")


def test_openai_client_gets_the_same_greedy_reply_as_tunedesk_chat(run, tmp_path):
    expected = {p: chat_reply(run, p) for p in PROMPTS}
    assert expected[PROMPTS[0]]["text"] == ANSWER  # the adapter is really trained
    proc, url, log = _start(["--adapter", str(run)], tmp_path)
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list().data] == ["secret", "SmolLM2-135M-Instruct"]
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            want = expected[prompt]
            reason = "stop" if want["finish_reason"] == "eos" else "length"
            whole = client.chat.completions.create(
                model="secret", messages=messages, temperature=0, max_tokens=MAX_TOKENS
            )
            assert whole.choices[0].message.content == want["text"], prompt
            assert whole.choices[0].finish_reason == reason
            assert whole.usage.completion_tokens == want["tokens"]
            pieces = []
            for chunk in client.chat.completions.create(
                model="secret", messages=messages, temperature=0, max_tokens=MAX_TOKENS, stream=True
            ):
                pieces += [c.delta.content for c in chunk.choices if c.delta.content]
            assert "".join(pieces) == want["text"] and len(pieces) > 1, prompt
        print(json.dumps({p: e["text"] for p, e in expected.items()}))
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
