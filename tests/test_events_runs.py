"""Event schema and run-folder primitives (atomic writes, complete checkpoints only, status)."""

from __future__ import annotations

import json
import math

import pytest

from backends.config import RunConfig
from backends.events import EventSchemaError, EventSink, make_event, read_events
from backends.runs import RunDir, atomic_dir, run_status, summarize_run


def test_make_event_requires_design_fields():
    e = make_event("eval", step=3, val_loss=1.5)
    assert e["v"] == 1 and e["event"] == "eval" and e["step"] == 3
    with pytest.raises(EventSchemaError, match="val_loss"):
        make_event("eval", step=3)
    with pytest.raises(EventSchemaError, match="memory"):
        make_event(
            "step",
            step=1,
            epoch=0.1,
            loss=1.0,
            learning_rate=1e-4,
            grad_norm=1.0,
            tokens=10,
            tokens_per_second=5.0,
            elapsed=1.0,
            eta=2.0,
            memory={"rss": 1},
        )
    with pytest.raises(EventSchemaError):
        make_event("run_failed", step=1, kind="weird", message="m", hint="h")


def test_nan_written_as_null_and_lines_parse(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventSink(path) as sink:
        sink.emit("eval", step=1, val_loss=math.nan)
        sink.emit("checkpoint", step=1, path=tmp_path)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["val_loss"] is None
    # A torn last line (writer killed mid-write) is skipped, earlier events stay.
    with open(path, "a") as fh:
        fh.write('{"v":1,"event":"step","st')
    events = read_events(path)
    assert [e["event"] for e in events] == ["eval", "checkpoint"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "ck"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_makes_private_files_readable(tmp_path):
    """Files a writer created 0600 (safetensors does) end up 0644, like the user's other files."""
    import os
    import stat

    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "sub").mkdir()
        for name in ("model.safetensors", "sub/x.json"):
            fd = os.open(tmp / name, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in final.rglob("*") if p.is_file()}
    assert modes == {"model.safetensors": 0o644, "x.json": 0o644}


def test_only_complete_checkpoints_count(tmp_path):
    run = RunDir.create(RunConfig(), runs_dir=tmp_path, name="r")
    with run.new_checkpoint(5) as ck:
        (ck / "state.json").write_text("{}")
    # A folder that looks like a checkpoint but lacks the marker (e.g. copied by hand, killed).
    (run.checkpoints_dir / "step-9").mkdir()
    assert run.latest_checkpoint() == run.checkpoints_dir / "step-5"
    for step in (10, 15):
        with run.new_checkpoint(step):
            pass
    run.prune_checkpoints(keep=2)
    assert [s for s, _ in run.checkpoints()] == [10, 15]


def test_status_from_events(tmp_path):
    run = RunDir.create(RunConfig(), runs_dir=tmp_path, name="r")
    assert run_status(run) == "new"
    with EventSink(run.events_path) as sink:
        sink.emit(
            "run_started",
            run_dir=run.path,
            backend="torch",
            device="cpu",
            model="m",
            method="sft",
            params_total=10,
            params_trainable=1,
            max_steps=2,
        )
        assert run_status(run) == "failed"  # started, no end event, no live worker: it died
        sink.emit("run_finished", step=2, adapter=run.adapter_dir, train_loss=1.0, val_loss=None)
    assert run_status(run) == "finished"
    info = summarize_run(run)
    assert info["status"] == "finished" and info["backend"] == "torch" and info["max_steps"] == 2
    # A second run of the same name gets its own folder.
    assert RunDir.create(RunConfig(), runs_dir=tmp_path, name="r").path.name == "r-2"


def test_console_progress_without_a_terminal_prints_plain_lines():
    """Into a pipe or log file the progress is plain lines (every 5% of the steps and the last),
    not tqdm redraws with carriage returns."""
    import io

    from backends.training.progress import ConsoleProgress

    out = io.StringIO()
    view = ConsoleProgress(out)
    view(
        {
            "event": "run_started",
            "max_steps": 40,
            "model": "m",
            "method": "sft",
            "backend": "torch",
            "device": "cpu",
            "params_trainable": 1,
            "params_total": 2,
            "run_dir": "r",
        }
    )
    for step in range(1, 41):
        view(
            {"event": "step", "step": step, "loss": 1.0 / step, "tokens_per_second": 100.0, "eta": 40 - step}
        )
    view({"event": "run_finished", "step": 40, "train_loss": 0.1, "val_loss": None, "adapter": "a"})
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == 20 and step_lines[0].startswith("step 2/40 (5%), loss 0.5000")
    assert step_lines[-1].startswith("step 40/40 (100%), loss 0.0250, 100 tok/s, ETA 0s")
    assert lines[0].startswith("run started: m (sft)") and lines[-1].startswith("finished at step 40")


def test_runs_command_prints_a_table_with_a_header(tmp_path, capsys):
    from backends.cli import main

    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err.startswith(f"no runs yet in {tmp_path}")
    run = RunDir.create(RunConfig(), runs_dir=tmp_path, name="first")
    with EventSink(run.events_path) as sink:
        for step in range(1, 8):
            sink.emit(
                "step",
                step=step,
                loss=1.25 + (7 - step),
                **dict.fromkeys(("epoch", "learning_rate", "grad_norm", "tokens", "tokens_per_second"), 0),
                **{
                    "elapsed": 0.0,
                    "eta": 0.0,
                    "memory": {"rss": 1, "device_allocated": None, "device_peak": None},
                },
            )
        sink.emit("run_finished", step=7, adapter="a", train_loss=1.25, val_loss=None, tokens=10, elapsed=1.0)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "STATUS", "STEPS", "TRAIN", "LOSS", "VAL", "LOSS", "STARTED"]
    assert row.split()[:5] == ["first", "finished", "7", "1.2500", "-"]  # run_finished's train_loss
