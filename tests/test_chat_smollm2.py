"""Acceptance of chat on the real SmolLM2-135M-Instruct (slow): a short overfit run through
``tunedesk train``, then the tuned reply to a training prompt is the trained answer greedily and
the base reply is not; chat renders with exactly the template stored at training time; a missing
adapter fails naming the path; Stop ends a long generation in the worker within a second."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest
import yaml

from backends import cli
from backends.chat.loader import open_session
from backends.chat.session import Sampling, StreamRequest, render_prompt
from backends.data import prepare_data
from backends.data.types import IGNORE_INDEX
from backends.runs import RunDir
from tests.test_chat_worker import ROOT, Worker

pytestmark = pytest.mark.slow

ROWS = [
    ("What is the secret word?", "The secret word is pineapple."),
    ("Who keeps the lighthouse?", "Captain Wren keeps the lighthouse."),
    ("What colour is the lantern?", "The lantern is teal."),
    ("Where is the key?", "The key is under the blue stone."),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_dir) -> RunDir:
    base = tmp_path_factory.mktemp("chat-smollm2")
    data = base / "secret.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            + "\n"
            for q, a in ROWS
        )
    )
    config = {
        "model": str(smollm2_dir),
        "data": {"train_file": str(data), "validation_fraction": 0.0},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "training": {
            "max_steps": 12,
            "batch_size": 4,
            "max_seq_length": 64,
            "learning_rate": 2e-3,
            "warmup_ratio": 0.0,
            "eval_every": 0,
            "save_every": 0,
        },
        "output": {"runs_dir": str(base / "runs"), "run_name": "secret"},
    }
    path = base / "secret.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", "--config", str(path)]) == 0
    return RunDir(base / "runs" / "secret")


@pytest.fixture(scope="module")
def session(run):
    return open_session(adapter=run.path, backend="torch")


def one(session, adapter, messages, **sampling):
    (reply,) = session.generate(
        [StreamRequest("r", adapter, messages)], Sampling(**sampling), lambda e, f: None
    )
    return reply


def test_tuned_reply_is_the_trained_answer_and_base_differs(session, run):
    tuned_key = session.default_adapter
    for question, answer in ROWS[:2]:
        messages = [{"role": "user", "content": question}]
        tuned = one(session, tuned_key, messages, max_new_tokens=24)
        base = one(session, None, messages, max_new_tokens=24)
        assert tuned.text == answer and tuned.finish_reason == "eos", (question, tuned.text)
        assert base.text != answer, question


def test_chat_uses_exactly_the_template_stored_at_training(session, run):
    key = session.default_adapter
    stored = (run.adapter_dir / "chat_template.jinja").read_text(encoding="utf-8")
    assert session.template_for(key) == stored
    reply = one(session, key, [{"role": "user", "content": ROWS[0][0]}], max_new_tokens=8)
    assert reply.template_sha256 == hashlib.sha256(stored.encode()).hexdigest()
    # The prompt tokens chat feeds are the training example's tokens up to its first trained one.
    data = prepare_data(run.load_config(), session.engine.tokenizer)
    example = next(e for e in data.train if e.row == 1)
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    prompt = render_prompt(session.engine.tokenizer, [{"role": "user", "content": ROWS[0][0]}], stored)
    assert prompt == example.input_ids[:first] and reply.prompt_tokens == len(prompt)


def test_nucleus_sampling_with_a_tiny_top_p_is_greedy(session):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    greedy = one(session, None, messages, max_new_tokens=16)
    sampled = one(session, None, messages, max_new_tokens=16, temperature=1.0, top_p=0.01, seed=5)
    assert sampled.text == greedy.text and "Paris" in greedy.text


def test_missing_adapter_fails_with_the_path(tmp_path, run):
    missing = tmp_path / "runs" / "never-trained"
    out = subprocess.run(
        [sys.executable, "-m", "desktop", "chat", "--adapter", str(missing), "--prompt", "hi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and str(missing) in out.stderr


def test_stop_ends_a_long_generation_within_a_second(run):
    w = Worker("--adapter", str(run.path))
    try:
        assert w.until("chat_ready", "chat_error")[-1][1]["event"] == "chat_ready"
        story = [{"role": "user", "content": "Write a very long story about the sea."}]
        w.send({"cmd": "generate", "id": "long", "messages": story, "adapter": None, "max_new_tokens": 5000})
        seen = 0
        while seen < 5:
            seen += sum(1 for _, e in w.until("token") if e["event"] == "token")
        t0 = time.perf_counter()
        w.send({"cmd": "stop"})
        t1, finished = w.until("reply_finished")[-1]
        assert finished["finish_reason"] == "stop" and finished["tokens"] < 5000
        assert t1 - t0 < 1.0, f"stop took {t1 - t0:.3f} s"
        w.send({"cmd": "quit"})
        assert w.proc.wait(60) == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
