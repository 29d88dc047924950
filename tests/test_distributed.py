"""``tunedesk train --nproc N``: sharding, the launcher's verdicts, and (2 processes on gloo, the
tiny Llama, fp32) the runs themselves: the same per-step losses and adapter as one process with
the same global batch, stop (SIGTERM to the launcher) and resume on the same curve, and a killed
rank ending the job with exit 3 and the rank named."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from backends.data.batching import make_batches
from backends.data.shard import shard_batch
from backends.data.types import IGNORE_INDEX, Example
from backends.events import read_events
from backends.jobs import launch
from tests.test_train_loop import DEMO_DATA, make_config, write_config

ROOT = Path(__file__).resolve().parent.parent


# --- sharding ---------------------------------------------------------------------------------
def _examples(n: int) -> list[Example]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        length = int(rng.integers(3, 12))
        ids = rng.integers(5, 100, size=length).tolist()
        labels = [IGNORE_INDEX] * 2 + ids[2:]
        out.append(Example(input_ids=ids, labels=labels, row=i + 1))
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_shards_of_a_global_batch_hold_its_rows_and_tokens(packing):
    batches = make_batches(
        _examples(11), batch_size=4, pad_token_id=0, seed=3, epoch=1, packing=packing, max_seq_length=24
    )
    for batch in batches:
        parts = [shard_batch(batch, r, 2) for r in range(2)]
        assert sorted(r for p in parts for r in p.rows) == sorted(batch.rows)
        assert sum(p.num_tokens for p in parts) == batch.num_tokens
        assert sum(p.num_label_tokens for p in parts) == batch.num_label_tokens
        for p in parts:
            if p.rows:  # trimmed to its longest row, the rows themselves unchanged
                assert p.attention_mask[:, -1].any()
                n = p.input_ids.shape[0]
                start = 0 if p is parts[0] else batch.input_ids.shape[0] - n
                width = p.input_ids.shape[1]
                assert np.array_equal(p.input_ids, batch.input_ids[start : start + n, :width])


def test_an_empty_share_is_one_row_without_labels_or_tokens():
    batch = make_batches(_examples(1), batch_size=4, pad_token_id=0, seed=0, epoch=0)[0]
    empty = shard_batch(batch, 1, 2)
    assert empty.input_ids.shape == (1, 1) and empty.attention_mask[0, 0] == 1
    assert empty.num_tokens == 0 and empty.num_label_tokens == 0 and empty.rows == []
    assert (empty.labels == IGNORE_INDEX).all()
    assert shard_batch(batch, 0, 1) is batch


# --- the launcher's verdicts ----------------------------------------------------------------
def _args(**kw) -> argparse.Namespace:
    base = dict(
        config="c.yaml",
        resume=None,
        overrides=["training.max_steps=3"],
        preset=None,
        json=True,
        nproc=2,
        nnodes=None,
        node_rank=None,
        master=None,
        allow_config_change=False,
    )
    return argparse.Namespace(**{**base, **kw})


def test_torchrun_command_standalone_and_multi_node():
    cmd = launch.torchrun_command(_args())
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[-6:] == ["train", "--config", "c.yaml", "--set", "training.max_steps=3", "--json"]
    cmd = launch.torchrun_command(_args(nnodes=2, node_rank=1, master="10.0.0.5:29500"))
    joined = " ".join(cmd)
    assert "--nnodes 2 --node-rank 1 --master-addr 10.0.0.5 --master-port 29500" in joined
    for bad in (dict(nnodes=2), dict(nnodes=2, master="nohost"), dict(node_rank=3)):
        with pytest.raises(Exception) as info:
            launch.torchrun_command(_args(**bad))
        assert getattr(info.value, "field", None) in ("--master", "--node-rank")


def test_the_rank_killed_first_is_named_before_ranks_that_lost_their_peer():
    peer_lost = {"outcome": "failed", "kind": "crash", "ended": 10.0, "pid": 1}
    statuses = {0: peer_lost, 1: {"pid": 2, "rank": 1}}  # rank 1: no outcome, it was killed
    assert launch.first_failure(statuses, range(2), {1: 9.5})[0] == 1
    own = {"outcome": "failed", "kind": "oom", "ended": 10.2, "pid": 2}
    assert launch.first_failure({0: peer_lost, 1: own}, range(2), {})[0] == 1
    done = {"outcome": "stopped"}
    assert launch.first_failure({0: done, 1: done}, range(2), {}) is None


def test_a_killed_rank_becomes_one_run_failed_event_with_its_rank(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text('{"v": 1, "event": "step", "step": 4, "time": 1}\n')
    statuses = {
        0: {"outcome": "failed", "kind": "crash", "ended": 5.0, "run_dir": str(run), "pid": 11},
        1: {"pid": 12, "rank": 1},
    }
    code = launch.outcome(_args(), statuses, range(2), {1: 4.0}, 1, oom_before=None, stop_asked=False)
    assert code == 3
    failed = [e for e in read_events(run / "events.jsonl") if e["event"] == "run_failed"]
    assert len(failed) == 1 and failed[0]["rank"] == 1 and failed[0]["kind"] == "crash"
    assert failed[0]["step"] == 4 and "pid 12" in failed[0]["message"]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == failed  # --json: the same event on stdout
    stopped = {0: {"outcome": "stopped", "run_dir": str(run)}, 1: {"outcome": "stopped"}}
    assert launch.outcome(_args(), stopped, range(2), {}, 0, None, True) == 130
    assert f"resume with `tunedesk train --resume {run} --nproc 2`" in capsys.readouterr().err


# --- real runs: 2 processes on gloo ----------------------------------------------------------
def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "desktop", "train", *args, "--json"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115
        text=True,
    )


def _config(tmp_path: Path, tiny_model_dir: Path, name: str, batch: int, **training) -> Path:
    lora = {"dropout": training.pop("dropout", 0.0)}
    training.setdefault("distributed", "ddp")
    rows = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:14]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    raw = make_config(
        tiny_model_dir,
        tmp_path / "runs",
        name,
        batch_size=batch,
        lora=lora,
        data={"train_file": str(data), "validation_fraction": 0.15},
        **training,
    )
    return write_config(tmp_path / f"{name}.yaml", raw)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> tuple[int, list[dict]]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _curve(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last event of each step (a resumed run replays steps after its checkpoint)."""
    return {e["step"]: e["loss"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "step"}


def _adapter(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tiny_model_dir, tmp_path, mode):
    # 12 training rows, global batch 4 with accumulation 2: steps of 8 rows then of 4 (an epoch
    # boundary), validation sharded too; FSDP also writes (gathers) a checkpoint on the way.
    settings = dict(max_steps=5, gradient_accumulation_steps=2, eval_every=2, save_every=3)
    one = _config(tmp_path, tiny_model_dir, "one", 4, **settings)
    two = _config(tmp_path, tiny_model_dir, "two", 2, distributed=mode, **settings)
    p1 = _train("--config", str(one), log=tmp_path / "one.log")
    code1, events1 = _finish(p1, tmp_path / "one.log")
    p2 = _train("--config", str(two), "--nproc", "2", log=tmp_path / "two.log")
    code2, events2 = _finish(p2, tmp_path / "two.log")
    assert code1 == 0 and code2 == 0, (tmp_path / "two.log").read_text()[-3000:]
    logs = " ".join(e["message"] for e in events2 if e["event"] == "log")
    assert f"{mode.upper()} over 2 processes" in logs
    # rank 0 alone wrote the events: one run_started, each step once, on stdout too
    names = [e["event"] for e in events2]
    assert names.count("run_started") == 1 and names.count("run_finished") == 1
    assert [e["step"] for e in events2 if e["event"] == "step"] == [1, 2, 3, 4, 5]
    c1, c2 = _curve(tmp_path / "runs" / "one"), _curve(tmp_path / "runs" / "two")
    assert c1.keys() == c2.keys() == {1, 2, 3, 4, 5}
    loss_diff = max(abs(c1[s] - c2[s]) for s in c1)
    tokens = [
        (a["tokens"], b["tokens"])
        for a, b in zip(*([e for e in ev if e["event"] == "step"] for ev in (events1, events2)), strict=True)
    ]
    assert all(a == b for a, b in tokens)  # the same examples, counted over the global batch
    val1 = [e["val_loss"] for e in events1 if e["event"] == "eval"]
    val2 = [e["val_loss"] for e in events2 if e["event"] == "eval"]
    adapter_diff = _max_diff(_adapter(tmp_path / "runs" / "one"), _adapter(tmp_path / "runs" / "two"))
    print(f"{mode}: max loss diff {loss_diff:.2e}, adapter diff {adapter_diff:.2e}")
    assert loss_diff < 1e-5
    assert len(val1) == len(val2) > 0 and max(abs(a - b) for a, b in zip(val1, val2, strict=True)) < 1e-5
    assert adapter_diff < 1e-4
    started = next(e for e in events2 if e["event"] == "run_started")
    assert started["train_examples"] == 12


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "events.jsonl").is_file() and any(
            e["event"] == "step" and e["step"] >= step for e in read_events(run_dir / "events.jsonl")
        ):
            return
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before step {step}"
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


@pytest.mark.slow
def test_stop_and_resume_on_two_processes_continue_the_same_curve(tiny_model_dir, tmp_path):
    # Dropout on: each rank's own RNG state must come back from the checkpoint. DDP and FSDP runs
    # stopped and resumed both follow the uninterrupted DDP run.
    settings = dict(max_steps=24, save_every=5, dropout=0.1)
    whole = _config(tmp_path, tiny_model_dir, "whole", 2, **settings)
    code, _ = _finish(_train("--config", str(whole), "--nproc", "2", log=tmp_path / "w.log"), tmp_path)
    assert code == 0, (tmp_path / "w.log").read_text()[-3000:]
    for mode in ("ddp", "fsdp"):
        _stop_and_resume(tmp_path, tiny_model_dir, mode, settings)


def _stop_and_resume(tmp_path: Path, tiny_model_dir: Path, mode: str, settings: dict) -> None:
    cut = _config(tmp_path, tiny_model_dir, f"cut-{mode}", 2, distributed=mode, **settings)
    proc = _train("--config", str(cut), "--nproc", "2", log=tmp_path / "c.log")
    run = tmp_path / "runs" / f"cut-{mode}"
    _wait_for_step(run, proc, 3)
    proc.send_signal(signal.SIGTERM)
    code, events = _finish(proc, tmp_path)
    assert code == 130, (tmp_path / "c.log").read_text()[-3000:]
    stopped = [e for e in events if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["step"] < 24
    checkpoint = Path(stopped[0]["checkpoint"])
    assert (checkpoint / "rank-0.json").is_file() and (checkpoint / "rank-1.json").is_file()
    code, _ = _finish(_train("--resume", str(run), "--nproc", "2", log=tmp_path / "r.log"), tmp_path)
    assert code == 0, (tmp_path / "r.log").read_text()[-3000:]
    a, b = _curve(tmp_path / "runs" / "whole"), _curve(run)
    assert a.keys() == b.keys() == set(range(1, 25))
    loss_diff = max(abs(a[s] - b[s]) for s in a)
    adapter_diff = _max_diff(_adapter(tmp_path / "runs" / "whole"), _adapter(run))
    print(
        f"{mode} stopped at step {stopped[0]['step']} and resumed: loss diff {loss_diff:.1e}, adapter {adapter_diff:.1e}"
    )
    assert loss_diff < 1e-5 and adapter_diff < 1e-5


def _rank_pid(launcher: int, rank: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher).children(recursive=True):
            try:
                env = child.environ()
            except psutil.Error:
                continue
            if env.get("RANK") == str(rank) and "desktop" in child.cmdline():
                return child.pid
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_exit_3_naming_it(tiny_model_dir, tmp_path):
    config = _config(tmp_path, tiny_model_dir, "killed", 2, max_steps=400, save_every=2)
    proc = _train("--config", str(config), "--nproc", "2", log=tmp_path / "k.log")
    run = tmp_path / "runs" / "killed"
    _wait_for_step(run, proc, 3)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    killed_at = time.monotonic()
    code, events = _finish(proc, tmp_path, timeout=120)
    seconds = time.monotonic() - killed_at
    print(f"kill to exit: {seconds:.1f} s")
    assert code == 3, (tmp_path / "k.log").read_text()[-3000:]
    assert seconds < 60
    failed = [e for e in read_events(run / "events.jsonl") if e["event"] == "run_failed"]
    assert len(failed) == 1 and failed[0]["rank"] == 1 and failed[0]["kind"] in ("crash", "oom")
    assert events[-1] == failed[0]  # the same event on stdout, last
    latest = max((int(p.name.split("-")[1]), p) for p in (run / "checkpoints").glob("step-*"))[1]
    assert (latest / "COMPLETE").is_file() and (latest / "rank-1.json").is_file()
    assert not (run / "adapter").exists()


def test_a_checkpoint_resumes_only_on_as_many_processes_as_wrote_it(tmp_path):
    from backends.errors import UserInputError
    from backends.training.distributed import (
        checkpoint_world_size,
        read_rank_state,
        write_rank_states,
    )

    checkpoint = tmp_path / "step-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 4, "world_size": 2}))
    write_rank_states(checkpoint, [{"rank": 0, "epoch": 1}, {"rank": 1, "epoch": 1}])
    assert checkpoint_world_size(checkpoint) == 2 and checkpoint_world_size(None) == 1
    assert read_rank_state(checkpoint, 1, 2, 2) == {"rank": 1, "epoch": 1}
    with pytest.raises(UserInputError) as info:
        read_rank_state(checkpoint, 0, 1, 2)
    assert info.value.field == "--nproc" and "--nproc 2" in info.value.hint
    (checkpoint / "rank-1.json").unlink()
    with pytest.raises(UserInputError):
        read_rank_state(checkpoint, 1, 2, 2)
    assert read_rank_state(tmp_path, 0, 1, 1) == {}  # a one-process checkpoint has no rank files


def test_a_rank_killed_while_the_oom_killer_counted_a_kill_is_kind_oom(tmp_path):
    event = launch.failure_event(1, {"pid": 7, "rank": 1}, None, oom_after=3, oom_before=2, args=_args())
    assert event["kind"] == "oom" and event["rank"] == 1 and "out-of-memory killer" in event["message"]
    assert "batch_size" in event["hint"]
    event = launch.failure_event(1, {"pid": 7, "rank": 1}, None, oom_after=2, oom_before=2, args=_args())
    assert event["kind"] == "crash"
