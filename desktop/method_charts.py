"""Charts of a training method's own figures (ORPO, KTO) on the Train page.

Each method's ``step`` events carry its figures (documented in ``backends.events``); this module
says which to chart and how to label them in everyday words, and builds one ``Chart`` per method,
hidden until a run of that method starts or one of its step events arrives. The DPO chart (reward
margin and accuracy) also serves ORPO, whose steps carry the same reward fields.
"""

from __future__ import annotations

from typing import Any

from desktop.charts import Chart

# method -> (chart title, y-axis label, [(series label, step field), ...])
METHOD_FIGURES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "orpo": (
        "ORPO (odds ratio preference)",
        "NLL / log odds",
        [("NLL of the good answers", "nll_loss"), ("log odds ratio good vs bad", "log_odds_chosen")],
    ),
    "kto": (
        "KTO (thumbs up / down)",
        "reward / KL",
        [
            ("reward of good answers", "rewards_desirable"),
            ("reward of bad answers", "rewards_undesirable"),
            ("KL to the base model", "kl"),
        ],
    ),
}


class MethodCharts:
    """One hidden chart per method in ``METHOD_FIGURES``; ``charts`` lists them for layout."""

    def __init__(self) -> None:
        self.by_method: dict[str, Chart] = {}
        for method, (title, y_label, series) in METHOD_FIGURES.items():
            chart = Chart(title, "step", y_label)
            for label, _ in series:
                chart.add_series(label)
            chart.setVisible(False)
            self.by_method[method] = chart

    @property
    def charts(self) -> list[Chart]:
        return list(self.by_method.values())

    def show_for(self, method: str | None) -> None:
        """Show the chart of ``method`` (None: hide all)."""
        for name, chart in self.by_method.items():
            chart.setVisible(name == method)

    def on_step(self, event: dict[str, Any]) -> None:
        """Append a step event's figures to the chart of the method whose fields it carries."""
        step = int(event["step"])
        for method, (_, _, series) in METHOD_FIGURES.items():
            present = [(label, field) for label, field in series if field in event]
            if not present:
                continue
            chart = self.by_method[method]
            chart.setVisible(True)
            for label, field in present:
                chart.series(label).append(step, event.get(field))
            chart.changed()
