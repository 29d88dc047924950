"""The chat worker protocol (``tunedesk chat --serve``) and the ``tunedesk chat`` command, run as
real child processes on the tiny model with a peft adapter."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends.events import REQUIRED
from tests.chat_adapters import ANSWER, PROMPT, ROWS, make_peft_run, write_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("chat-worker")
    data = write_rows(base / "train.jsonl")
    return make_peft_run(
        base / "runs" / "secret",
        tiny_model_dir,
        data={"train_file": str(data), "validation_fraction": 0.5},
    )


def n_answer(tiny_model_dir):
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tiny_model_dir)(ANSWER, add_special_tokens=False)["input_ids"])


class Worker:
    """A chat worker child process; events are collected on a thread with their arrival time."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desktop", "chat", "--serve", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.put((time.perf_counter(), json.loads(line)))
        self.events.put((time.perf_counter(), None))

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def until(self, *names: str, timeout: float = 120) -> list[tuple[float, dict]]:
        out = []
        deadline = time.monotonic() + timeout
        while True:
            t, e = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert e is not None, f"worker ended early: {self.proc.stderr.read()[-3000:]}"
            out.append((t, e))
            if e["event"] in names:
                return out


def test_worker_protocol(run, tiny_model_dir):
    n = n_answer(tiny_model_dir)
    w = Worker("--model", str(tiny_model_dir))
    try:
        ready = w.until("chat_ready", "chat_error")[-1][1]
        assert ready["event"] == "chat_ready" and ready["backend"] == "torch" and ready["adapter"] is None

        # Side by side: base and tuned stream together, each event tagged with request and stream.
        w.send(
            {
                "cmd": "generate",
                "id": "g1",
                "messages": PROMPT,
                "max_new_tokens": n,
                "streams": [{"id": "base", "adapter": None}, {"id": "tuned", "adapter": str(run)}],
            }
        )
        events = [e for _, e in w.until("reply_finished")] + [e for _, e in w.until("reply_finished")]
        finished = {e["stream"]: e for e in events if e["event"] == "reply_finished"}
        assert finished["tuned"]["text"] == ANSWER and finished["base"]["text"] != ANSWER
        tokens = [e for e in events if e["event"] == "token"]
        assert {e["stream"] for e in tokens} == {"base", "tuned"} and all(
            e["request"] == "g1" for e in tokens
        )
        assert "".join(e["text"] for e in tokens if e["stream"] == "tuned") == ANSWER
        for e in events:  # every design field is there, with the schema version
            assert e["v"] == 1 and all(f in e for f in REQUIRED[e["event"]])
        fin = finished["tuned"]
        assert fin["tokens"] == n and fin["tokens_per_second"] > 0 and 0 < fin["time_to_first_token"] < 30

        # A missing adapter is an error naming the path; the worker goes on.
        missing = str(run.parent / "gone")
        w.send({"cmd": "set_adapter", "id": "s1", "adapter": missing})
        err = w.until("chat_error", "chat_ready")[-1][1]
        assert err["event"] == "chat_error" and err["kind"] == "input" and missing in err["message"]
        assert err["request"] == "s1"

        # set_adapter makes it current: a generate without "adapter" uses it.
        w.send({"cmd": "set_adapter", "id": "s2", "adapter": str(run)})
        ready = w.until("chat_ready", "chat_error")[-1][1]
        assert ready["event"] == "chat_ready" and ready["adapter"] == str(run)
        w.send({"cmd": "generate", "id": "g2", "messages": PROMPT, "max_new_tokens": n})
        assert w.until("reply_finished")[-1][1]["text"] == ANSWER

        # Stop ends a long generation within a second.
        w.send(
            {"cmd": "generate", "id": "long", "messages": PROMPT, "adapter": None, "max_new_tokens": 100000}
        )
        seen = 0
        while seen < 10:
            seen += sum(1 for _, e in w.until("token") if e["event"] == "token")
        t0 = time.perf_counter()
        w.send({"cmd": "stop"})
        t1, fin = w.until("reply_finished")[-1]
        assert fin["finish_reason"] == "stop" and fin["tokens"] < 100000
        assert t1 - t0 < 1.0, f"stop took {t1 - t0:.3f} s"

        # Validation prompts of the run: its held-out rows with their reference answers.
        w.send({"cmd": "validation_prompts", "id": "v1", "run": str(run), "n": 5})
        vp = w.until("validation_prompts", "chat_error")[-1][1]
        assert vp["event"] == "validation_prompts" and vp["source"] == "validation"
        assert len(vp["prompts"]) == 2  # half of the 4 rows are held out
        by_q = dict(ROWS)
        for p in vp["prompts"]:
            assert (
                p["messages"][-1]["role"] == "user" and p["reference"] == by_q[p["messages"][-1]["content"]]
            )

        # Bad commands are reported, never fatal.
        w.proc.stdin.write("this is not json\n")
        w.proc.stdin.flush()
        assert w.until("chat_error")[-1][1]["kind"] == "input"
        w.send({"cmd": "generate", "id": "g3", "messages": [{"role": "assistant", "content": "x"}]})
        err = w.until("chat_error")[-1][1]
        assert "messages[0].role" in err["message"] and err["request"] == "g3"
        w.send({"cmd": "dance"})
        assert "unknown command" in w.until("chat_error")[-1][1]["message"]

        w.send({"cmd": "quit"})
        assert w.proc.wait(30) == 0
        assert all(line.startswith("{") for line in w.raw)  # stdout carries events only
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


def test_worker_with_missing_adapter_fails_at_start(tmp_path):
    missing = tmp_path / "no-run"
    w = Worker("--adapter", str(missing))
    err = w.until("chat_error", "chat_ready")[-1][1]
    assert err["event"] == "chat_error" and str(missing) in err["message"]
    assert w.proc.wait(60) == 1


def _cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "desktop", "chat", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_one_reply_streams_to_stdout(run, tiny_model_dir):
    n = n_answer(tiny_model_dir)
    out = _cli("--adapter", str(run), "--prompt", PROMPT[0]["content"], "--max-new-tokens", str(n))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ANSWER + "\n"
    assert f"[{n} tokens," in out.stderr and "tokens/s" in out.stderr


def test_cli_interactive_json_keeps_history_until_reset(run, tiny_model_dir):
    n = n_answer(tiny_model_dir)
    q = PROMPT[0]["content"]
    script = f"{q}\n{q}\n/reset\n{q}\n/system Be brief.\n/quit\n"
    out = _cli("--adapter", str(run), "--max-new-tokens", str(n), "--json", stdin=script)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    finished = [e for e in events if e["event"] == "reply_finished"]
    p1, p2, p3 = (e["prompt_tokens"] for e in finished)
    assert p2 > p1 + n and p3 == p1  # the history grew, then /reset cleared it
    assert finished[0]["text"] == finished[2]["text"] == ANSWER
    assert "".join(e["text"] for e in events[: events.index(finished[0])] if e["event"] == "token") == ANSWER
    assert "(new conversation)" in out.stderr and "(system prompt: Be brief.)" in out.stderr


def test_cli_missing_adapter_fails_with_the_path(tmp_path):
    missing = tmp_path / "runs" / "nothing-here"
    out = _cli("--adapter", str(missing), "--prompt", "hi")
    assert out.returncode == 1 and str(missing) in out.stderr and "Traceback" not in out.stderr
