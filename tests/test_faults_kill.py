"""SIGKILL of the training worker at random points, and at the worst moments (while a checkpoint
is being written, while the final adapter is being saved, right after a checkpoint), then
`tunedesk train --resume`: every resumed run ends with an adapter that is bit-for-bit the adapter
of an uninterrupted run with the same seed.

Cost: the workers are forked from one process that imported the training stack once
(tests/fork_server.py); the tiny Llama, 16 rows and 8 steps make one run about a second, so one
reference run and 23 kill-and-resume trials take about a minute."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from backends.runs import RunDir, run_status
from tests.test_train_loop import DEMO_DATA, make_config, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork server needs POSIX fork"),
]

RANDOM_POINTS = 20
SETTINGS = dict(max_steps=8, save_every=2, keep_checkpoints=2, gradient_accumulation_steps=1)


def _weights(run_dir: Path) -> tuple[bytes, bytes]:
    adapter = run_dir / "adapter"
    return (adapter / "adapter_model.safetensors").read_bytes(), (
        adapter / "adapter_config.json"
    ).read_bytes()


def _kill_when(pid: int, appears, timeout: float = 60) -> bool:
    """Poll (every ~0.2 ms) until ``appears()`` is true, then SIGKILL ``pid``; False if the
    process ended first or the moment never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if appears():
            os.kill(pid, signal.SIGKILL)
            return True
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return False
        except ChildProcessError:
            pass  # not our child (the fork server's): fine
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.0002)
    return False


def _any(folder: Path, prefix: str) -> bool:
    try:
        return any(e.name.startswith(prefix) for e in os.scandir(folder))
    except FileNotFoundError:
        return False


def test_sigkill_at_random_points_and_mid_write_resumes_bit_identically(tiny_model_dir, tmp_path):
    rows = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:16]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")

    from tests.fork_server import ForkServer

    server = ForkServer(env)
    try:

        def config(name: str) -> Path:
            raw = make_config(tiny_model_dir, runs, name, data={"train_file": str(data)}, **SETTINGS)
            return write_config(tmp_path / f"{name}.yaml", raw)

        t0 = time.monotonic()
        server.start(["train", "--config", str(config("reference"))], tmp_path / "reference.log")
        assert server.wait() == 0, (tmp_path / "reference.log").read_text()
        duration = time.monotonic() - t0
        expected = _weights(runs / "reference")

        rng = random.Random(23)
        plans: list[tuple[str, float | None]] = [
            ("random", rng.uniform(0.0, duration)) for _ in range(RANDOM_POINTS)
        ]
        plans += [("checkpoint-write", None), ("adapter-save", None), ("after-checkpoint", None)]
        outcomes = []
        for i, (kind, delay) in enumerate(plans):
            name = f"t{i}"
            run = RunDir(runs / name)
            pid = server.start(["train", "--config", str(config(name))], tmp_path / f"{name}.log")
            if kind == "random":
                time.sleep(delay)
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                hit = True
            elif kind == "checkpoint-write":
                hit = _kill_when(pid, lambda run=run: _any(run.checkpoints_dir, ".tmp-step-"))
            elif kind == "adapter-save":
                hit = _kill_when(pid, lambda run=run: _any(run.path, ".tmp-adapter-"))
            else:
                hit = _kill_when(pid, lambda run=run: bool(run.checkpoints()))
            code = server.wait()
            if kind != "random":
                assert hit and code == -signal.SIGKILL, f"{kind}: the kill missed its moment (exit {code})"
            outcomes.append((kind, code))
            # what a user does next: resume (or start again if the run folder was never written);
            # a kill that landed after the final adapter was in place leaves a finished run
            if code != 0 and run_status(run) != "finished":
                if run.config_path.is_file():
                    argv = ["train", "--resume", str(run.path)]
                else:
                    shutil.rmtree(run.path, ignore_errors=True)
                    argv = ["train", "--config", str(config(name))]
                server.start(argv, tmp_path / f"{name}-resume.log")
                resumed = server.wait()
                assert resumed == 0, (
                    f"{name} ({kind}): {(tmp_path / f'{name}-resume.log').read_text()[-3000:]}"
                )
            assert run_status(run) == "finished"
            assert _weights(run.path) == expected, f"{name} ({kind}, exit {code}): adapter differs"
            assert not [p for p in run.path.iterdir() if p.name.startswith((".tmp-", ".old-"))]
        killed = sum(1 for _, code in outcomes if code == -signal.SIGKILL)
        print(f"reference run {duration:.2f} s; {killed} of {len(outcomes)} runs killed", file=sys.stderr)
        assert killed >= RANDOM_POINTS // 2 + 3  # most random points land inside the run
    finally:
        server.close()
