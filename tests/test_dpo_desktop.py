"""The Train page's run monitor for DPO runs: the preference chart (reward margin, reward accuracy,
validation reward accuracy) appears when the run's method is dpo, live or read back from a run
folder, and stays hidden for SFT runs. Events are built with the real schema (make_event /
EventSink), as the training worker writes them."""

from __future__ import annotations

from backends.events import make_event
from desktop.run_monitor import RunMonitor
from tests.test_desktop_monitor import started_event, step_event, write_run


def dpo_started(max_steps: int = 4) -> dict:
    return {**started_event(max_steps=max_steps), "method": "dpo"}


def dpo_events() -> list[dict]:
    events = [dpo_started()]
    for step in range(1, 5):
        margin = 0.05 * (step - 1)
        events.append(
            step_event(
                step,
                0.693 - 0.01 * (step - 1),
                rewards_chosen=margin / 2,
                rewards_rejected=-margin / 2,
                reward_margin=margin,
                reward_accuracy=min(1.0, 0.25 * (step - 1)),
            )
        )
        if step % 2 == 0:
            events.append(make_event("eval", step=step, val_loss=0.68, reward_accuracy=0.5 + 0.1 * step))
    return events


def test_preference_chart_follows_a_live_dpo_run(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    m.reset()
    m.begin_process()
    assert not m.dpo_chart.isVisibleTo(m)
    events = dpo_events()
    m.handle_event(events[0])
    assert m.dpo_chart.isVisibleTo(m)  # shown from run_started on, before the first step
    for e in events[1:]:
        m.handle_event(e)
    m.refresh_charts()
    assert list(m.dpo_chart.series("reward margin").y) == [0.0, 0.05, 0.1, 0.15000000000000002]
    assert list(m.dpo_chart.series("reward accuracy").y) == [0.0, 0.25, 0.5, 0.75]
    assert list(m.dpo_chart.series("validation reward accuracy").x) == [2, 4]
    assert m.dpo_chart.displayed_points("reward accuracy") == 4
    assert "reward accuracy 0.90" in m.log.toPlainText()
    # a new SFT run in the same monitor hides the chart again
    m.reset()
    m.handle_event(started_event())
    assert not m.dpo_chart.isVisibleTo(m) and len(m.dpo_chart.series("reward margin")) == 0


def test_preference_chart_of_a_dpo_run_read_back_from_its_folder(qtbot, tmp_path):
    run = write_run(tmp_path / "runs", "dpo-run", dpo_events())
    m = RunMonitor()
    qtbot.addWidget(m)
    m.load_run(run.path)
    assert m.method == "dpo" and m.dpo_chart.isVisibleTo(m)
    assert m.dpo_chart.series("reward margin").y[-1] == 0.15000000000000002
    assert list(m.dpo_chart.series("validation reward accuracy").y) == [0.7, 0.9]
    sft = write_run(tmp_path / "runs", "sft-run", [started_event(), step_event(1, 2.0)])
    m.load_run(sft.path)
    assert not m.dpo_chart.isVisibleTo(m)
