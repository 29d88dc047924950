"""The run monitor, worker results and run history, fed with events of the real schema
(``backends.events.make_event`` / ``EventSink``, as the training worker writes them)."""

from __future__ import annotations

import os

import pytest

from backends.config import config_from_dict
from backends.events import EventSink, make_event
from backends.runs import RunDir
from desktop.run_history import RunHistory, delete_run
from desktop.run_monitor import RunMonitor, format_duration
from desktop.worker import WorkerResult


def step_event(step: int, loss: float, **extra):
    return make_event(
        "step",
        step=step,
        epoch=step / 10,
        loss=loss,
        learning_rate=2e-4 * (1 - step / 20),
        grad_norm=0.5,
        tokens=100 * step,
        tokens_per_second=250.0 + step,
        elapsed=float(step),
        eta=float(10 - step),
        memory={"rss": 400_000_000 + step * 1_000_000, "device_allocated": None, "device_peak": None},
        **extra,
    )


def started_event(run_dir: str = "/runs/r1", max_steps: int = 10):
    return make_event(
        "run_started",
        run_dir=run_dir,
        backend="torch",
        device="cpu",
        model="tiny",
        method="sft",
        params_total=3_000_000,
        params_trainable=30_000,
        max_steps=max_steps,
    )


def write_run(runs_dir, name, events, *, checkpoint_step=None, train_file="data.jsonl"):
    run = RunDir.create(
        config_from_dict({"model": "tiny", "data": {"train_file": train_file}}), runs_dir, name
    )
    with EventSink(run.events_path) as sink:
        for e in events:
            fields = {k: v for k, v in e.items() if k not in ("v", "event", "time")}
            sink.emit(e["event"], **fields)
    if checkpoint_step is not None:
        with run.new_checkpoint(checkpoint_step) as tmp:
            (tmp / "state.txt").write_text("x")
    return run


def test_monitor_shows_a_finished_run(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    m.reset()
    m.begin_process()
    m.handle_event(started_event())
    for step in range(1, 11):
        m.handle_event(step_event(step, 3.0 - step * 0.1))
        if step % 5 == 0:
            m.handle_event(make_event("eval", step=step, val_loss=2.9 - step * 0.05))
    qtbot.waitUntil(lambda: m.progress.value() == 10, timeout=2000)  # coalesced update
    assert m.progress.value() == 10 and m.progress.maximum() == 10
    assert "time left about 0:00" in m.stats.text() and "(epochs) 1.00" in m.stats.text()
    m.handle_event(
        make_event("run_finished", step=10, adapter="/runs/r1/adapter", train_loss=2.0, val_loss=2.4)
    )
    m.refresh_charts()
    assert len(m.loss_chart.series("train loss")) == 10
    assert m.loss_chart.displayed_points("train loss") == 10
    assert list(m.loss_chart.series("validation loss").y) == pytest.approx([2.65, 2.4])
    assert len(m.lr_chart.series("learning rate")) == 10
    assert m.speed_chart.series("tokens/s").y[-1] == 260.0
    assert m.memory_chart.series("worker RSS").y[-1] == 410_000_000
    assert "Finished at step 10" in m.status.text()
    assert not m.dpo_chart.isVisibleTo(m)


def test_monitor_shows_dpo_rewards_only_for_dpo_steps(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    m.handle_event(started_event())
    m.handle_event(step_event(1, 0.69, reward_margin=0.1, reward_accuracy=0.5))
    assert m.dpo_chart.isVisibleTo(m)
    assert m.dpo_chart.series("reward margin").y[-1] == 0.1


def test_run_failed_is_shown_in_plain_words(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    m.handle_event(started_event())
    m.handle_event(step_event(1, 3.0))
    m.handle_event(
        make_event(
            "run_failed",
            step=2,
            kind="nan",
            message="the loss became NaN at step 2",
            hint="lower the learning rate",
        )
    )
    result = WorkerResult(3, False, False, m.final_event, ["..."])
    m.show_result(result)
    text = m.status.text()
    assert "the loss became NaN at step 2" in text and "What to try: lower the learning rate" in text


def test_worker_result_texts():
    tail = [f"line {i}" for i in range(30)]
    crashed = WorkerResult(-9, True, False, None, tail)
    text = crashed.error_text()
    assert text.startswith("The training process crashed (was killed)")
    assert "line 29" in text and "line 17" not in text  # the last 12 lines
    died = WorkerResult(7, False, False, None, ["Segmentation fault"])
    assert "crashed (exited with code 7)" in died.error_text() and "Segmentation fault" in died.error_text()
    bad_input = WorkerResult(
        1, False, False, None, ["", "error: /x.yaml:3: training.batch_size: must be >= 1"]
    )
    assert bad_input.error_text() == "/x.yaml:3: training.batch_size: must be >= 1"
    stopped = WorkerResult(130, False, True, {"event": "stopped", "step": 3}, [])
    assert stopped.error_text() == ""
    assert WorkerResult(0, False, False, {"event": "run_finished"}, []).ok


def test_load_run_and_resume_rerun_steps(qtbot, tmp_path):
    runs = tmp_path / "runs"
    events = [started_event(max_steps=10)] + [step_event(s, 3.0 - s * 0.1) for s in range(1, 7)]
    events.append(make_event("stopped", step=6, checkpoint="checkpoints/step-6"))
    run = write_run(runs, "stopped-run", events, checkpoint_step=6)
    m = RunMonitor()
    qtbot.addWidget(m)
    m.load_run(run.path)
    assert len(m.loss_chart.series("train loss")) == 6 and m.progress.value() == 6
    assert "Stopped at step 6" in m.status.text()
    assert m.run_dir == str(run.path)
    # Resumed from a checkpoint at step 4: steps 5.. arrive again and replace the old ones.
    m.begin_process()
    m.handle_event(started_event(run_dir=str(run.path), max_steps=10))
    for s in range(5, 11):
        m.handle_event(step_event(s, 1.0))
    m.refresh_charts()
    series = m.loss_chart.series("train loss")
    assert list(series.x) == list(range(1, 11)) and series.y[4] == 1.0
    assert m.progress.value() == 10


def test_run_history_lists_cli_runs_and_caches(tmp_path):
    runs = tmp_path / "runs"
    finished = [started_event(), *[step_event(s, 2.0) for s in (1, 2)]]
    finished.append(make_event("run_finished", step=2, adapter="a", train_loss=2.0, val_loss=None))
    write_run(runs, "done", finished)
    write_run(runs, "killed", [started_event(), step_event(1, 2.5)], checkpoint_step=1)
    history = RunHistory()
    rows = {r["name"]: r for r in history.runs([runs])}
    assert rows["done"]["status"] == "finished" and rows["done"]["train_loss"] == 2.0
    assert rows["killed"]["status"] == "failed" and rows["killed"]["checkpoint"] is True
    again = {r["name"]: r for r in history.runs([runs])}
    assert again["done"] is rows["done"]  # unchanged folder: served from the cache
    with EventSink(runs / "killed" / "events.jsonl") as sink:
        sink.emit("stopped", step=1, checkpoint="checkpoints/step-1")
    assert {r["name"]: r for r in history.runs([runs])}["killed"]["status"] == "stopped"
    # A resumed run's repeated step keeps its latest loss.
    with EventSink(runs / "done" / "events.jsonl") as sink:
        fields = {k: v for k, v in step_event(2, 1.5).items() if k not in ("v", "event", "time")}
        sink.emit("step", **fields)
    steps, losses = history.loss_curve(runs / "done")
    assert list(steps) == [1, 2] and list(losses) == [2.0, 1.5]


def test_delete_run_refuses_a_running_run(tmp_path):
    run = write_run(tmp_path / "runs", "live", [started_event()])
    run.acquire_lock()  # held by this (live) process
    with pytest.raises(RuntimeError, match="running"):
        delete_run(run.path)
    run.release_lock()
    delete_run(run.path)
    assert not run.path.exists()
    assert os.path.isdir(tmp_path / "runs")


def test_format_duration():
    assert (
        format_duration(3725) == "1:02:05" and format_duration(65) == "1:05" and format_duration(None) == "-"
    )


def test_monitor_charts_kto_and_orpo_figures(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    (kto,) = m.method_charts.by_method["kto"]
    (orpo,) = m.method_charts.by_method["orpo"]
    m.handle_event(started_event())
    assert not kto.isVisibleTo(m) and not orpo.isVisibleTo(m)
    m.handle_event(step_event(1, 0.5, kl=0.2, rewards_desirable=0.3, desirable_share=0.5))
    assert kto.isVisibleTo(m) and not orpo.isVisibleTo(m) and not m.dpo_chart.isVisibleTo(m)
    assert kto.series("KL to the base model").y[-1] == 0.2
    assert kto.series("reward of good answers").y[-1] == 0.3
    assert len(kto.series("reward of bad answers")) == 0  # the step had no undesirable row
    m.reset()
    assert not kto.isVisibleTo(m)
    m.handle_event(step_event(1, 2.1, nll_loss=2.0, log_odds_chosen=-0.4, reward_margin=0.01))
    assert orpo.isVisibleTo(m) and m.dpo_chart.isVisibleTo(m)
    assert orpo.series("log odds ratio good vs bad").y[-1] == -0.4
