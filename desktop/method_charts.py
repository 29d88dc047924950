"""Charts of a training method's own figures (ORPO, KTO, GRPO) on the Train page.

Each method's ``step`` events carry its figures (documented in ``backends.events``); this module
says which to chart and how to label them in everyday words, and builds the charts of each method,
hidden until a run of that method starts or one of its step events arrives. The DPO chart (reward
margin and accuracy) also serves ORPO, whose steps carry the same reward fields.

GRPO's reward functions are the user's (``grpo.rewards``), so their series are made as their
fields first arrive: ``reward_mean/<name>`` (solid) and ``reward_std/<name>`` (dashed, the same
colour: the spread of that reward over the step's completions).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QGridLayout

from desktop.charts import Chart, series_color

# method -> its charts: [(chart title, y-axis label, [(series label, step field), ...]), ...]
METHOD_FIGURES: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = {
    "orpo": [
        (
            "ORPO (odds ratio preference)",
            "NLL / log odds",
            [("NLL of the good answers", "nll_loss"), ("log odds ratio good vs bad", "log_odds_chosen")],
        )
    ],
    "kto": [
        (
            "KTO (thumbs up / down)",
            "reward / KL",
            [
                ("reward of good answers", "rewards_desirable"),
                ("reward of bad answers", "rewards_undesirable"),
                ("KL to the base model", "kl"),
            ],
        )
    ],
    "grpo": [
        (
            "GRPO rewards (mean, and spread over the completions)",
            "reward",
            [("total reward (mean)", "reward_mean"), ("total reward (spread)", "reward_std")],
        ),
        ("GRPO answer length", "tokens", [("completion length (mean)", "completion_length")]),
        (
            "GRPO drift and clipping",
            "KL / share",
            [("KL to the base model", "kl"), ("share of clipped tokens", "clip_fraction")],
        ),
    ],
}
# Fields only one method's steps carry: how a step event names its method when the run's does not.
SIGNATURES = {
    "orpo": ("nll_loss",),
    "kto": ("desirable_share", "rewards_desirable", "rewards_undesirable"),
    "grpo": ("completion_length", "clip_fraction", "reward_mean"),
}
REWARD_MEAN, REWARD_STD = "reward_mean/", "reward_std/"


def reward_series(name: str) -> tuple[str, str]:
    """The series labels of GRPO reward function ``name``: (mean, spread)."""
    return f"{name} (mean)", f"{name} (spread)"


class MethodCharts:
    """The charts of every method in ``METHOD_FIGURES``, hidden; ``charts`` lists them all."""

    def __init__(self) -> None:
        self.by_method: dict[str, list[Chart]] = {}
        for method, specs in METHOD_FIGURES.items():
            self.by_method[method] = []
            for title, y_label, series in specs:
                chart = Chart(title, "step", y_label)
                for label, field in series:
                    total = field in ("reward_mean", "reward_std")  # one colour, the spread dashed
                    chart.add_series(
                        label, dashed=field == "reward_std", color=series_color(0) if total else None
                    )
                chart.setVisible(False)
                self.by_method[method].append(chart)
        self.method: str | None = None
        self._rewards: list[str] = []  # GRPO reward functions seen, in order

    @property
    def charts(self) -> list[Chart]:
        return [chart for charts in self.by_method.values() for chart in charts]

    def place(self, grid: QGridLayout, row: int) -> None:
        """Put the charts into ``grid`` from ``row`` on: each method's first chart across two
        columns, the others two a row below it (only one method's charts are shown at a time)."""
        for charts in self.by_method.values():
            grid.addWidget(charts[0], row, 0, 1, 2)
            for i, chart in enumerate(charts[1:]):
                grid.addWidget(chart, row + 1 + i // 2, i % 2)

    def reset(self) -> None:
        """A new run: hide every chart and drop the series of the last run's reward functions."""
        grpo = self.by_method["grpo"][0]
        for name in self._rewards:
            for label in reward_series(name):
                grpo.remove_series(label)
        self._rewards = []
        self.show_for(None)

    def show_for(self, method: str | None) -> None:
        """Show the charts of ``method`` (None or a method without charts: hide all)."""
        self.method = method
        for name, charts in self.by_method.items():
            for chart in charts:
                chart.setVisible(name == method)

    def _method_of(self, event: dict[str, Any]) -> str | None:
        if self.method in self.by_method:
            return self.method
        return next((m for m, fields in SIGNATURES.items() if any(f in event for f in fields)), None)

    def on_step(self, event: dict[str, Any]) -> None:
        """Append a step event's figures to the charts of its run's method (or, for a run of
        another method, of the method whose fields it carries)."""
        method = self._method_of(event)
        if method is None:
            return
        step = int(event["step"])
        charts = self.by_method[method]
        for chart, (_, _, series) in zip(charts, METHOD_FIGURES[method], strict=True):
            appended = [field for _, field in series if field in event]
            for label, field in series:
                if field in event:
                    chart.series(label).append(step, event[field])
            if method == "grpo" and chart is charts[0]:
                appended += self._append_rewards(chart, step, event)
            if appended:
                chart.setVisible(True)
                chart.changed()

    def _append_rewards(self, chart: Chart, step: int, event: dict[str, Any]) -> list[str]:
        """Append each reward function's mean and spread; returns the fields it appended."""
        appended = []
        for key in event:
            if not key.startswith(REWARD_MEAN):
                continue
            name = key[len(REWARD_MEAN) :]
            mean, spread = reward_series(name)
            if name not in self._rewards:
                color = series_color(2 + len(self._rewards))
                chart.add_series(mean, color=color)
                chart.add_series(spread, color=color, dashed=True)
                self._rewards.append(name)
            chart.series(mean).append(step, event[key])
            chart.series(spread).append(step, event.get(REWARD_STD + name))
            appended.append(key)
        return appended
