"""Tokenising 10,000 Alpaca rows with the SmolLM2 tokenizer through the data pipeline.

Goal: under 15 s on the reference machine (2-core x86 CPU). Measured: ``prepare_data`` end to end
(read the file, detect, validate, render with the chat template, tokenise, completion-only
labels), on the 999 rows of ``../shared/data/llamafactory/alpaca_en_demo.json`` repeated to
10,000 (written to a temporary JSONL file; the shared file is read in place, never copied into
the project).

Peer, in the same run: the common per-row recipe with transformers: for each row,
``apply_chat_template(messages, tokenize=True)`` for the full conversation and again for the
prompt with ``add_generation_prompt=True``, labels = ids after the prompt's length. The script
also checks that both give the same input ids, so the ratio compares equal work.

Usage: ``python benchmarks/tokenize_alpaca.py [--rows N] [--model NAME_OR_DIR]``
(the default model is imported into ``$TUNEDESK_HOME`` on first use).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends import models  # noqa: E402
from backends.config import DEFAULT_MODEL, RunConfig  # noqa: E402
from backends.data import IGNORE_INDEX, load_tokenizer, prepare_data  # noqa: E402

ALPACA = ROOT.parent / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"
GOAL_S = 15.0


def naive(tokenizer, rows):
    """Per-row apply_chat_template, twice per row (full and prompt), as many scripts do."""
    out = []
    for r in rows:
        user = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
        full = tokenizer.apply_chat_template(messages, tokenize=True)
        prompt = tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        n = len(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        out.append((full, [IGNORE_INDEX] * n + full[n:]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()

    tokenizer = load_tokenizer(models.resolve_model(args.model))
    base = json.loads(ALPACA.read_text(encoding="utf-8"))
    rows = [base[i % len(base)] for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alpaca.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        config = RunConfig.model_validate(
            {
                "data": {"train_file": str(path), "validation_fraction": 0.0},
                "training": {"max_seq_length": 4096},
            }
        )
        t0 = time.perf_counter()
        data = prepare_data(config, tokenizer)
        ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    peer = naive(tokenizer, rows)
    peer_s = time.perf_counter() - t0

    same = sum(1 for e, (ids, _) in zip(data.train, peer, strict=True) if e.input_ids == ids)
    # The peer also trains the newline after <|im_end|> (it belongs to the next prompt); ours does not.
    same_labels = sum(
        1
        for e, (_, lab) in zip(data.train, peer, strict=True)
        if e.labels[1:-1] == lab[1:-1] and e.labels[-1] == IGNORE_INDEX != lab[-1]
    )
    print(f"rows: {len(data.train)} kept of {args.rows}; tokens: {sum(len(e.input_ids) for e in data.train)}")
    print(f"tunedesk prepare_data:        {ours:7.2f} s  {args.rows / ours:8.0f} rows/s")
    print(f"peer per-row chat template:   {peer_s:7.2f} s  {args.rows / peer_s:8.0f} rows/s")
    print(f"ratio (peer time / ours):     {peer_s / ours:7.2f}x")
    print(f"identical input ids: {same}/{len(peer)}")
    print(f"identical labels but the trailing newline the peer trains: {same_labels}/{len(peer)}")
    verdict = "PASS" if ours < GOAL_S else "FAIL"
    print(f"goal: < {GOAL_S:.0f} s for 10,000 rows: {verdict} ({ours:.2f} s)")
    return 0 if ours < GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
