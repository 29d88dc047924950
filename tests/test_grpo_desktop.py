"""The Train page's GRPO charts: fed with GRPO step events of the real schema (make_event /
EventSink, as the training worker writes them), live and read back from a run folder: the mean and
spread of each reward function (series made as the functions first appear), completion length,
KL and clip fraction; KTO's chart stays hidden although GRPO steps also carry ``kl``; a new run
drops the last run's reward functions. (That the GUI process imports no ML library while these
charts are built is tests/test_desktop_imports.py.)"""

from __future__ import annotations

import pytest

from backends.events import GRPO_STEP_FIELDS
from desktop.method_charts import reward_series
from desktop.run_monitor import RunMonitor
from tests.test_desktop_monitor import started_event, step_event, write_run


def grpo_steps(n: int = 4) -> list[dict]:
    events = []
    for step in range(1, n + 1):
        fmt, length = 0.25 * (step - 1), 0.5
        events.append(
            step_event(
                step,
                0.01 * step,
                reward_mean=fmt + length,
                reward_std=0.4,
                **{
                    "reward_mean/regex": fmt,
                    "reward_std/regex": 0.5 - 0.1 * step,
                    "reward_mean/length": length,
                    "reward_std/length": 0.5,
                },
                completion_length=30.0 - 5 * step,
                kl=0.001 * step,
                clip_fraction=0.0 if step < 3 else 0.125,
            )
        )
    return events


def test_grpo_charts_follow_a_live_run(qtbot):
    m = RunMonitor()
    qtbot.addWidget(m)
    m.reset()
    m.begin_process()
    rewards, length, drift = m.method_charts.by_method["grpo"]
    kto = m.method_charts.by_method["kto"][0]
    m.handle_event({**started_event(), "method": "grpo"})
    assert rewards.isVisibleTo(m) and length.isVisibleTo(m) and drift.isVisibleTo(m)
    assert not kto.isVisibleTo(m) and not m.dpo_chart.isVisibleTo(m)
    steps = grpo_steps()
    assert all(k in steps[0] for k in GRPO_STEP_FIELDS)
    for e in steps:
        m.handle_event(e)
    m.refresh_charts()
    regex_mean, regex_spread = reward_series("regex")
    assert list(rewards.series(regex_mean).y) == [0.0, 0.25, 0.5, 0.75]
    assert list(rewards.series(regex_spread).y) == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert list(rewards.series(reward_series("length")[0]).y) == [0.5] * 4
    assert list(rewards.series("total reward (mean)").y) == [0.5, 0.75, 1.0, 1.25]
    assert rewards.displayed_points(regex_mean) == 4
    assert list(length.series("completion length (mean)").y) == [25.0, 20.0, 15.0, 10.0]
    assert list(drift.series("KL to the base model").x) == [1, 2, 3, 4]
    assert list(drift.series("share of clipped tokens").y) == [0.0, 0.0, 0.125, 0.125]
    assert len(kto.series("KL to the base model")) == 0  # GRPO's kl went to the GRPO chart only

    # A new run with other reward functions: the old ones' series are gone.
    m.reset()
    assert not rewards.isVisibleTo(m) and not rewards.has_series(regex_mean)
    m.handle_event({**started_event(), "method": "grpo"})
    m.handle_event(step_event(1, 0.0, reward_mean=1.0, reward_std=0.0, **{"reward_mean/valid_json": 1.0}))
    assert rewards.series(reward_series("valid_json")[0]).y[-1] == 1.0
    assert len(rewards.series(reward_series("valid_json")[1])) == 0  # no spread in the event


def test_grpo_charts_of_a_run_read_back_from_its_folder(qtbot, tmp_path):
    run = write_run(tmp_path / "runs", "grpo-run", [{**started_event(), "method": "grpo"}, *grpo_steps()])
    m = RunMonitor()
    qtbot.addWidget(m)
    m.load_run(run.path)
    rewards, length, drift = m.method_charts.by_method["grpo"]
    assert m.method == "grpo" and rewards.isVisibleTo(m) and drift.isVisibleTo(m)
    assert rewards.series(reward_series("regex")[0]).y[-1] == 0.75
    assert length.series("completion length (mean)").y[-1] == 10.0
    # Steps of a GRPO run whose run_started is not known (an older folder) still find their charts.
    m.reset()
    m.handle_event(started_event())  # method sft
    m.handle_event(grpo_steps(1)[0])
    assert rewards.isVisibleTo(m) and not m.method_charts.by_method["kto"][0].isVisibleTo(m)
