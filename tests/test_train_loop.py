"""The shared training loop through ``run_training`` and the real ``tunedesk train`` command, on
the tiny Llama: run folder and events, exact resume after SIGKILL, SIGTERM stop, NaN failure,
incomplete checkpoints, and bad input that leaves nothing behind."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from backends import cli
from backends.config import config_from_dict
from backends.errors import RunStopped, UserInputError
from backends.events import MEMORY_FIELDS, REQUIRED, read_events
from backends.jobs import make_engine, run_training
from backends.runs import COMPLETE_MARKER, RunDir, run_status
from backends.training.loop import STATE_FILE, STOP_FILE
from backends.training.schedule import learning_rate

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "resources" / "demo" / "support_train.jsonl"


def make_config(model_dir: Path, runs_dir: Path, name: str, **training) -> dict:
    lora = training.pop("lora", {})
    data = training.pop("data", {})
    return {
        "model": str(model_dir),
        "data": {"train_file": str(DEMO_DATA), "validation_fraction": 0.0, **data},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1, **lora},
        "training": {
            "batch_size": 2,
            "max_seq_length": 160,
            "learning_rate": 1e-3,
            "precision": "fp32",
            "eval_every": 0,
            **training,
        },
        "output": {"runs_dir": str(runs_dir), "run_name": name},
    }


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def start_train(*args: str, log: Path) -> subprocess.Popen:
    """`tunedesk train ...` as a child process (stdout: JSON events, stderr: into ``log``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "desktop", "train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115
        text=True,
    )


def wait_for_event(events_path: Path, proc: subprocess.Popen, predicate, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in read_events(events_path):
            if predicate(event):
                return event
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the awaited event")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for an event")


def steps(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "step"]


def test_run_folder_events_and_adapter(tiny_model_dir, tmp_path):
    raw = make_config(
        tiny_model_dir,
        tmp_path / "runs",
        "layout",
        max_steps=4,
        save_every=2,
        eval_every=2,
        keep_checkpoints=1,
        gradient_accumulation_steps=2,
        warmup_ratio=0.25,
        data={"validation_fraction": 0.05},
    )
    config = config_from_dict(raw)
    run = run_training(config, console=False)
    assert run.path == tmp_path / "runs" / "layout"
    assert run_status(run) == "finished" and not (run.path / "run.lock").exists()

    # config.yaml: the fully resolved config, data path absolute
    saved = yaml.safe_load(run.config_path.read_text())
    assert saved["training"]["max_steps"] == 4 and saved["training"]["weight_decay"] == 0.0
    assert saved["data"]["train_file"] == str(DEMO_DATA)

    events = run.events()
    names = [e["event"] for e in events]
    assert names.count("run_started") == 1 and names[-1] == "run_finished"
    assert "run_failed" not in names and "stopped" not in names
    started = next(e for e in events if e["event"] == "run_started")
    assert started["backend"] == "torch" and started["device"] == "cpu" and started["max_steps"] == 4
    assert 0 < started["params_trainable"] < started["params_total"]
    step_events = steps(events)
    assert [e["step"] for e in step_events] == [1, 2, 3, 4]
    total = 0
    for e in step_events:
        assert all(f in e for f in REQUIRED["step"]), e
        assert all(f in e["memory"] for f in MEMORY_FIELDS)
        assert e["memory"]["rss"] > 50 * 2**20
        assert math.isfinite(e["loss"]) and e["loss"] > 0 and e["grad_norm"] > 0
        assert e["learning_rate"] == pytest.approx(
            learning_rate(e["step"] - 1, peak=1e-3, total_steps=4, warmup=1, kind="cosine")
        )
        total += e["step_tokens"]
        assert e["tokens"] == total and e["tokens_per_second"] > 0
        assert e["elapsed"] > 0 and e["eta"] >= 0 and 0 < e["epoch"] < 1
    assert step_events[0]["learning_rate"] == 0.0  # linear warmup starts at 0, as in transformers
    assert [e["step"] for e in events if e["event"] == "eval"] == [2, 4]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2]
    finished = events[-1]
    assert finished["train_loss"] == pytest.approx(sum(e["loss"] for e in step_events) / 4)
    assert finished["val_loss"] == [e for e in events if e["event"] == "eval"][-1]["val_loss"]

    # checkpoints: complete, with loop and engine state
    assert [s for s, _ in run.checkpoints()] == [2]
    cp = run.checkpoints_dir / "step-2"
    state = json.loads((cp / STATE_FILE).read_text())
    assert state["step"] == 2 and state["batch_index"] == 4 and state["epoch"] == 0
    for name in (COMPLETE_MARKER, "adapter_model.safetensors", "optimizer.pt", "rng_torch.pt"):
        assert (cp / name).is_file()

    # the adapter: peft files, the exact training template, tunedesk.json
    adapter = run.adapter_dir
    assert Path(finished["adapter"]) == adapter
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    assert (adapter / "chat_template.jinja").read_text() == template
    meta = json.loads((adapter / "tunedesk.json").read_text())
    assert meta["base_model"] == {"name": str(tiny_model_dir), "path": str(tiny_model_dir)}
    assert meta["backend"] == "torch" and meta["method"] == "sft" and meta["tunedesk_version"]
    assert meta["created"]
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    assert peft_config["r"] == 4 and peft_config["lora_alpha"] == 8
    assert oct((adapter / "adapter_model.safetensors").stat().st_mode)[-3:] == "644"

    log = run.log_path.read_text()
    assert "step 4: loss" in log and "finished at step 4" in log

    # plain peft loads it and it changes the model's output
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def test_resume_after_sigkill_replays_the_same_losses(tiny_model_dir, tmp_path):
    """SIGKILL a `tunedesk train` child after its first checkpoint; `--resume` continues from the
    newest complete checkpoint and every later step's loss and gradient norm equals that of an
    uninterrupted run (fp32, CPU, LoRA dropout on, so RNG state matters)."""
    runs = tmp_path / "runs"
    settings = dict(max_steps=9, save_every=2, keep_checkpoints=2, gradient_accumulation_steps=2)
    reference = run_training(
        config_from_dict(make_config(tiny_model_dir, runs, "reference", **settings)), console=False
    )
    expected = {e["step"]: e for e in steps(reference.events())}
    assert len(expected) == 9

    cfg = write_config(tmp_path / "run.yaml", make_config(tiny_model_dir, runs, "killed", **settings))
    proc = start_train("--config", str(cfg), "--json", log=tmp_path / "killed.log")
    run = RunDir(runs / "killed")
    wait_for_event(run.events_path, proc, lambda e: e["event"] == "checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_events = run.events()
    assert not any(e["event"] == "run_finished" for e in killed_events)
    assert run_status(run) == "failed"  # killed: no final event, lock holder gone
    latest = run.checkpoints()[-1][0]

    proc = start_train("--resume", str(run.path), "--json", log=tmp_path / "resume.log")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, (tmp_path / "resume.log").read_text()
    stdout_events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = run.events()
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    assert resumed["resumed_from"] == latest >= 2
    assert stdout_events[-1]["event"] == "run_finished" and stdout_events[-1] == events[-1]
    after = steps(events[events.index(resumed) :])
    assert [e["step"] for e in after] == list(range(latest + 1, 10))
    for e in after:
        ref = expected[e["step"]]
        assert e["loss"] == pytest.approx(ref["loss"], abs=1e-5), e["step"]
        assert e["grad_norm"] == pytest.approx(ref["grad_norm"], abs=1e-5)
        assert e["tokens"] == ref["tokens"] and e["learning_rate"] == ref["learning_rate"]
    assert run_status(run) == "finished"


def test_sigterm_stops_with_a_checkpoint_then_resume_finishes(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    cfg = write_config(
        tmp_path / "run.yaml", make_config(tiny_model_dir, runs, "term", max_steps=16, save_every=0)
    )
    proc = start_train("--config", str(cfg), log=tmp_path / "term.log")
    run = RunDir(runs / "term")
    wait_for_event(run.events_path, proc, lambda e: e["event"] == "step" and e["step"] >= 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 130, (tmp_path / "term.log").read_text()
    events = run.events()
    stopped = events[-1]
    assert stopped["event"] == "stopped" and not any(e["event"] == "run_finished" for e in events)
    assert stopped["step"] == steps(events)[-1]["step"] < 16
    checkpoint = Path(stopped["checkpoint"])
    assert checkpoint == run.checkpoints_dir / f"step-{stopped['step']}"
    assert (checkpoint / COMPLETE_MARKER).is_file() and run.latest_checkpoint() == checkpoint
    assert run_status(run) == "stopped"
    log = (tmp_path / "term.log").read_text()
    assert f"stopped at step {stopped['step']}; resume with `tunedesk train --resume {run.path}`" in log
    assert "stopped: stopped" not in log

    # --set cannot change a run being resumed; a plain --resume continues to the end (a stale
    # stop request does not stop it again)
    (run.path / STOP_FILE).write_text("")
    code = cli.main(["train", "--resume", str(run.path), "--set", "training.max_steps=3"])
    assert code == 1
    proc = start_train("--resume", str(run.path), log=tmp_path / "resume.log")
    proc.communicate(timeout=300)
    assert proc.returncode == 0, (tmp_path / "resume.log").read_text()
    events = run.events()
    assert [e["resumed_from"] for e in events if e["event"] == "run_started"] == [None, stopped["step"]]
    assert events[-1]["event"] == "run_finished" and events[-1]["step"] == 16
    assert run_status(run) == "finished"


def test_nan_loss_fails_with_exit_3_and_keeps_the_last_good_checkpoint(tiny_model_dir, tmp_path):
    """fp16 with a huge learning rate overflows after a few steps: the run fails with kind nan at
    that step, exits 3, writes no adapter and keeps the checkpoints taken before."""
    runs = tmp_path / "runs"
    raw = make_config(
        tiny_model_dir,
        runs,
        "nan",
        max_steps=30,
        save_every=1,
        keep_checkpoints=2,
        precision="fp16",
        learning_rate=1000.0,
        lr_scheduler="constant",
        warmup_ratio=0.05,
    )
    proc = start_train("--config", str(write_config(tmp_path / "run.yaml", raw)), log=tmp_path / "nan.log")
    proc.communicate(timeout=300)
    log = (tmp_path / "nan.log").read_text()
    assert proc.returncode == 3, log
    assert "run failed (nan)" in log and "learning_rate" in log
    run = RunDir(runs / "nan")
    events = run.events()
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "nan" and failed["hint"]
    last_step = steps(events)[-1]["step"]
    assert failed["step"] == last_step < 30
    assert not any(e["event"] == "run_finished" for e in events)
    assert not run.adapter_dir.exists()
    assert run.checkpoints()[-1][0] == last_step  # the last good step's checkpoint is kept
    from safetensors.numpy import load_file

    weights = load_file(run.latest_checkpoint() / "adapter_model.safetensors")
    assert all(__import__("numpy").isfinite(w).all() for w in weights.values())
    assert run_status(run) == "failed"


def test_out_of_memory_fails_with_kind_oom_and_concrete_hints(tiny_model_dir, tmp_path, monkeypatch):
    """A device OOM in a step (simulated: no GPU here) ends the run with kind oom, hints naming
    the settings to change, and the checkpoints before it kept."""
    import torch

    from backends.errors import RunFailed
    from backends.torch_backend.engine import TorchEngine

    real = TorchEngine.loss_sum
    calls = {"n": 0}

    def loss_sum(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch)

    monkeypatch.setattr(TorchEngine, "loss_sum", loss_sum)
    runs = tmp_path / "runs"
    config = config_from_dict(
        make_config(tiny_model_dir, runs, "oom", max_steps=10, save_every=1, batch_size=4)
    )
    with pytest.raises(RunFailed) as info:
        run_training(config, console=False)
    assert info.value.kind == "oom"
    failed = RunDir(runs / "oom").events()[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "oom" and failed["step"] == 2
    assert "out of memory" in failed["message"]
    for words in (
        "batch_size (now 4, try 2)",
        "gradient_accumulation_steps to 2",
        "max_seq_length (now 160)",
    ):
        assert words in failed["hint"]
    assert "gradient_checkpointing: true" in failed["hint"]
    assert [s for s, _ in RunDir(runs / "oom").checkpoints()] == [1, 2]


def test_a_stop_request_file_stops_the_run(tiny_model_dir, tmp_path):
    """Where signals cannot reach the worker (Windows), a ``stop.request`` file in the run folder
    stops it the same way: checkpoint, ``stopped``, RunStopped (exit 130); the file is removed."""
    runs = tmp_path / "runs"
    config = config_from_dict(make_config(tiny_model_dir, runs, "filestop", max_steps=200, save_every=0))
    events_path = runs / "filestop" / "events.jsonl"

    def request_stop_after_step_2() -> None:
        while not any(e["event"] == "step" and e["step"] >= 2 for e in read_events(events_path)):
            time.sleep(0.02)
        (runs / "filestop" / STOP_FILE).write_text("")

    threading.Thread(target=request_stop_after_step_2, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(config, console=False)
    run = RunDir(runs / "filestop")
    stopped = run.events()[-1]
    assert stopped["event"] == "stopped" and 2 <= stopped["step"] < 200
    assert run.latest_checkpoint() == Path(stopped["checkpoint"])
    assert not (run.path / STOP_FILE).exists()


def test_stop_during_the_final_validation_saves_and_resume_evaluates(tiny_model_dir, tmp_path, monkeypatch):
    """Validation goes a batch at a time: a stop asked during the final pass stops before the
    next batch with a checkpoint of the last step (no adapter yet); the resumed run only
    evaluates and finishes. The batch-wise val_loss (weighted by label tokens) equals the
    engine's loss over all validation batches at once."""
    from backends.torch_backend.engine import TorchEngine

    runs = tmp_path / "runs"
    stop = threading.Event()
    seen: list = []
    original = TorchEngine.eval_metrics

    def eval_and_stop(self, batches):
        seen.extend(batches)
        stop.set()  # as if Ctrl-C came during the first validation batch
        return original(self, batches)

    monkeypatch.setattr(TorchEngine, "eval_metrics", eval_and_stop)
    raw = make_config(tiny_model_dir, runs, "valstop", max_steps=3, data={"validation_fraction": 0.1})
    with pytest.raises(RunStopped):
        run_training(config_from_dict(raw), console=False, stop=stop)
    run = RunDir(runs / "valstop")
    events = run.events()
    assert len(seen) == 1  # stopped after one batch, not after the whole pass
    assert not [e for e in events if e["event"] == "eval"]
    assert events[-1]["event"] == "stopped" and events[-1]["step"] == 3
    assert run.latest_checkpoint().name == "step-3" and not run.adapter_dir.exists()

    seen.clear()
    monkeypatch.setattr(TorchEngine, "eval_metrics", lambda self, b: seen.extend(b) or original(self, b))
    captured: dict = {}
    monkeypatch.setattr(
        TorchEngine,
        "save_adapter",
        lambda self, path, _orig=TorchEngine.save_adapter: (
            captured.setdefault("whole", original(self, list(seen))["val_loss"]),
            _orig(self, path),
        )[1],
    )
    run_training(None, resume_dir=run.path, console=False)
    events = run.events()
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]  # no step trained twice
    (final,) = [e for e in events if e["event"] == "eval"]
    assert len(seen) > 1 and final["step"] == 3
    assert final["val_loss"] == pytest.approx(captured["whole"], rel=1e-6)
    assert events[-1]["event"] == "run_finished" and (run.adapter_dir / "adapter_config.json").is_file()


def test_incomplete_checkpoints_are_never_resumed(tiny_model_dir, tmp_path):
    """A checkpoint folder without its COMPLETE marker (a kill during the write) and a leftover
    temporary folder are ignored by resume, which continues from the newest complete one."""
    runs = tmp_path / "runs"
    config = config_from_dict(make_config(tiny_model_dir, runs, "partial", max_steps=50, save_every=2))
    stop = threading.Event()
    marker = runs / "partial" / "checkpoints" / "step-4" / COMPLETE_MARKER

    def stop_after_second_checkpoint() -> None:
        while not marker.exists():
            time.sleep(0.02)
        stop.set()

    watcher = threading.Thread(target=stop_after_second_checkpoint, daemon=True)
    watcher.start()
    with pytest.raises(RunStopped):
        run_training(config, console=False, stop=stop)
    run = RunDir(runs / "partial")
    good = run.latest_checkpoint()
    good_step = int(good.name.split("-")[1])
    assert good_step >= 4
    # what a kill in the middle of writing step N+2 would leave: a renamed-away temp folder, or
    # (had the marker not been written last) a folder without it
    half = run.checkpoints_dir / f"step-{good_step + 2}"
    shutil.copytree(good, half)
    (half / COMPLETE_MARKER).unlink()
    (half / "optimizer.pt").write_bytes(b"\0" * 10)
    tmp = run.checkpoints_dir / f".tmp-step-{good_step + 4}-abc"
    shutil.copytree(good, tmp)
    assert run.latest_checkpoint() == good

    config2 = run.load_config().model_copy(deep=True)
    assert config2.training.max_steps == 50
    # A stop asked before training starts now stops before run_started (nothing to save yet), so
    # resume and let it finish: the resumed run_started says where it continued from.
    run_training(None, resume_dir=run.path, console=False)
    started = [e for e in run.events() if e["event"] == "run_started"][-1]
    assert started["resumed_from"] == good_step
    steps = [e["step"] for e in run.events() if e["event"] == "step"]
    assert steps[-(50 - good_step) :] == list(range(good_step + 1, 51))  # continued after the good one
    assert not tmp.exists()  # stale temporary folders are cleaned up


def test_bad_target_module_is_a_user_error_and_leaves_no_run_folder(tiny_model_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    raw = make_config(tiny_model_dir, runs, "bad", max_steps=2, lora={"target_modules": ["attn"]})
    code = cli.main(["train", "--config", str(write_config(tmp_path / "bad.yaml", raw))])
    err = capsys.readouterr().err
    assert code == 1
    assert "lora.target_modules" in err and "'attn'" in err and "q_proj" in err
    assert not (runs / "bad").exists()


def test_resuming_a_finished_run_is_refused(tiny_model_dir, tmp_path, capsys):
    run = run_training(
        config_from_dict(make_config(tiny_model_dir, tmp_path / "runs", "done", max_steps=1)), console=False
    )
    assert cli.main(["train", "--resume", str(run.path)]) == 1
    assert "already finished" in capsys.readouterr().err


def test_resuming_a_missing_folder_says_so(tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "never")]) == 1
    assert f"{tmp_path / 'never'}: no such run folder" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path)]) == 1
    assert "not a run folder (no config.yaml)" in capsys.readouterr().err


def test_mlx_backend_missing_is_a_clear_user_error(monkeypatch):
    for name in ("mlx", "mlx.core", "mlx_lm"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now raises ImportError
    with pytest.raises(UserInputError) as info:
        make_engine(config_from_dict({"backend": "mlx"}))
    assert info.value.field == "backend" and "mlx" in str(info.value)


def test_backend_auto_picks_torch_on_this_machine():
    engine = make_engine(config_from_dict({"backend": "auto"}))
    assert engine.name == "torch" and engine.device == "cpu"
