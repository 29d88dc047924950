"""benchmarks/gpu_suite.py --smoke: the GPU suite's code paths (random-weight model built locally,
ours and TRL+PEFT, LoRA and QLoRA with packing) on the CPU with a tiny Llama."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_prints_one_row_per_side_and_mode(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("bitsandbytes")
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--smoke", "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("tiny ")]
    assert [(r[1], r[2]) for r in rows] == [
        ("lora", "ours"),
        ("lora", "trl"),
        ("qlora", "ours"),
        ("qlora", "trl"),
    ]
    for r in rows:
        assert float(r[3]) > 0  # tokens/s
        # a random model on random tokens: the loss is about ln(vocabulary) on both sides
        assert abs(float(r[-1]) - math.log(512)) < 0.2
    assert (tmp_path / "tiny" / "config.json").is_file()
