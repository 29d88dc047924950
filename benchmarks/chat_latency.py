"""Time to first token and tokens/s of our chat worker against the raw libraries, same model, same
prompt, same greedy settings, measured in one run.

Peers: plain transformers ``model.generate`` (PyTorch backend) and ``mlx_lm`` (``stream_generate``,
the loop under ``mlx_lm.generate``; MLX backend). Ours: the real chat worker process
(``python -m desktop chat --serve``), driven through its JSON-lines protocol exactly as the app
drives it.

What is measured, per reply (after one warm-up reply each):
- time to first token: from the request to the first generated token. Raw: from calling the
  library to its first streamed token. Ours: the worker's own figure (``reply_finished``), and the
  client's, from writing the command to reading the first ``token`` event (adds the pipe);
- tokens/s (decode): (tokens - 1) / (time of the last token - time of the first), the same formula
  for both (mlx-lm's ``generation_tps`` is this too); ours is timed by the client from the token
  events it reads, so the protocol's cost is included.
Runs alternate (raw, ours, raw, ours, ...), each after a short rest, so background load hits both
alike; medians are printed with the ratio ours / raw. Goal: tokens/s >= 0.95x the raw library's. Both must produce the same
text (greedy), which is checked.

Usage:
    python benchmarks/chat_latency.py [--model SmolLM2-135M-Instruct] [--backends torch,mlx]
        [--max-new-tokens 128] [--mlx-max-new-tokens 32] [--repeats 5] [--pause 1] [--threads N]
        [--prompt TEXT]

MLX on a Linux CPU (mlx[cpu]) runs SmolLM2 at a few tokens/s, hence the shorter MLX replies by
default; on a Mac with Apple silicon pass ``--mlx-max-new-tokens 128`` for the same length.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 0.95
DEFAULT_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def decode_rate(stamps: list[float]) -> float | None:
    """(n - 1) / (last - first) for token arrival times (None for fewer than two)."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


class Worker:
    """Our chat worker process; events are read on a thread and time-stamped on arrival."""

    def __init__(self, model: str, backend: str, threads: int | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads, as set_num_threads
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desktop", "chat", "--serve", "--model", model, "--backend", backend],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.next("chat_ready", "chat_error")
        if ready["event"] != "chat_ready":
            raise SystemExit(f"the chat worker failed to start: {ready}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put((time.perf_counter(), json.loads(line)))

    def next(self, *names: str) -> dict[str, Any]:
        while True:
            _, event = self.events.get(timeout=1800)
            if event["event"] in names:
                return event

    def reply(self, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        command = {"cmd": "generate", "id": "b", "messages": messages, "max_new_tokens": max_new_tokens}
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        stamps = []
        while True:
            t, event = self.events.get(timeout=1800)
            if event["event"] == "token":
                stamps.append(t)
            elif event["event"] == "reply_finished":
                # reply_finished follows the last token at once: (tokens - 1) over the time from
                # the first token event to it is the decode rate as the client receives it.
                n = event["tokens"]
                return {
                    "text": event["text"],
                    "tokens": n,
                    "ttft": event["time_to_first_token"],
                    "ttft_client": stamps[0] - t0 if stamps else None,
                    "tps": (n - 1) / (t - stamps[0]) if stamps and n > 1 and t > stamps[0] else None,
                    "tps_worker": event["tokens_per_second"],
                }
            elif event["event"] == "chat_error":
                raise SystemExit(f"chat error: {event}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write('{"cmd": "quit"}\n')
        self.proc.stdin.flush()
        self.proc.wait(60)


def raw_torch(model_dir: Path, threads: int | None = None) -> Any:
    """A function prompt_ids, n -> result, running plain transformers ``generate``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    from backends.chat.torch_generator import pick_dtype
    from backends.torch_backend.device import pick_device

    device = pick_device()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=pick_dtype(device)).to(device).eval()

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run(ids: list[int], n: int) -> dict[str, Any]:
        streamer = Stamps()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids], device=device),
                max_new_tokens=n,
                do_sample=False,
                streamer=streamer,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, len(ids) :].tolist()
        if new and new[-1] in (model.generation_config.eos_token_id, tok.eos_token_id):
            new = new[:-1]
        return {
            "text": tok.decode(new, skip_special_tokens=True),
            "tokens": len(streamer.times),
            "ttft": streamer.times[0] - t0,
            "tps": decode_rate(streamer.times),
        }

    return tok, run


def raw_mlx(model_dir: Path, threads: int | None = None) -> Any:
    """A function prompt_ids, n -> result, running mlx-lm's ``stream_generate``."""
    import mlx_lm

    model, wrapper = mlx_lm.load(str(model_dir))

    def run(ids: list[int], n: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        stamps, text, last = [], [], None
        for response in mlx_lm.stream_generate(model, wrapper, ids, max_tokens=n):
            stamps.append(time.perf_counter())
            text.append(response.text)
            last = response
        assert last is not None
        return {
            "text": "".join(text),
            "tokens": last.generation_tokens,
            "ttft": stamps[0] - t0,
            "tps": decode_rate(stamps),
            "tps_library": last.generation_tps,
        }

    return wrapper._tokenizer, run


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:.3f}{unit}"


def bench(
    backend: str,
    model_dir: Path,
    messages: list[dict[str, str]],
    n: int,
    repeats: int,
    pause: float,
    threads: int | None = None,
) -> dict[str, Any]:
    from backends.chat.session import render_prompt

    print(f"\n== {backend}: {model_dir.name}, {n} new tokens, {repeats} repeats", flush=True)
    tok, raw = (raw_torch if backend == "torch" else raw_mlx)(model_dir, threads)
    ids = render_prompt(tok, messages, tok.chat_template)
    worker = Worker(str(model_dir), backend, threads)
    try:
        raw(ids, n)  # warm-up
        worker.reply(messages, n)
        raws, ours = [], []
        for i in range(repeats):
            # A pause before each measurement lets the other process's OpenMP threads stop
            # spin-waiting (on 2 cores they would otherwise slow down whichever runs next).
            time.sleep(pause)
            raws.append(raw(ids, n))
            time.sleep(pause)
            ours.append(worker.reply(messages, n))
            print(
                f"  run {i + 1}: raw {raws[-1]['tokens']} tok, ttft {fmt(raws[-1]['ttft'], ' s')}, "
                f"{fmt(raws[-1]['tps'])} tok/s | ours {ours[-1]['tokens']} tok, ttft {fmt(ours[-1]['ttft'], ' s')}"
                f" (client {fmt(ours[-1]['ttft_client'], ' s')}), {fmt(ours[-1]['tps'])} tok/s",
                flush=True,
            )
    finally:
        worker.close()
    same = all(r["text"] == o["text"] for r, o in zip(raws, ours, strict=True))
    result = {
        "backend": backend,
        "model": model_dir.name,
        "prompt_tokens": len(ids),
        "new_tokens": ours[0]["tokens"],
        "same_text": same,
        "raw_ttft_s": median([r["ttft"] for r in raws]),
        "ours_ttft_s": median([o["ttft"] for o in ours]),
        "ours_ttft_client_s": median([o["ttft_client"] for o in ours]),
        "raw_tokens_per_s": median([r["tps"] for r in raws]),
        "ours_tokens_per_s": median([o["tps"] for o in ours]),
        "ours_tokens_per_s_worker": median([o["tps_worker"] for o in ours]),
    }
    if result["raw_tokens_per_s"] and result["ours_tokens_per_s"]:
        result["ratio"] = result["ours_tokens_per_s"] / result["raw_tokens_per_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--backends", default="torch,mlx")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--mlx-max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest before each measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides (default: torch's own choice); 1 is steadier on a busy machine",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from backends import models
    from backends.chat.loader import mlx_available

    model_dir = Path(models.resolve_model(args.model))
    messages = [{"role": "user", "content": args.prompt}]
    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "mlx" and not mlx_available():
            print("\n(mlx-lm is not installed: MLX skipped)")
            continue
        n = args.max_new_tokens if backend == "torch" else args.mlx_max_new_tokens
        results.append(bench(backend, model_dir, messages, n, args.repeats, args.pause, args.threads))
    print(
        "\n| backend | new tokens | TTFT raw | TTFT ours (worker / client) | tok/s raw | tok/s ours | ratio | same text |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['backend']} | {r['new_tokens']} | {fmt(r['raw_ttft_s'], ' s')} | "
            f"{fmt(r['ours_ttft_s'], ' s')} / {fmt(r['ours_ttft_client_s'], ' s')} | {fmt(r['raw_tokens_per_s'])} | "
            f"{fmt(r['ours_tokens_per_s'])} | {fmt(r.get('ratio'))}x | {r['same_text']} |"
        )
    for r in results:
        ok = r.get("ratio") is not None and r["ratio"] >= GOAL
        print(
            f"{r['backend']}: ours / raw tokens/s = {fmt(r.get('ratio'))} (goal >= {GOAL}): {'met' if ok else 'NOT met'}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (this machine's other jobs share the cores)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
