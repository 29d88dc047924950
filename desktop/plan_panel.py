"""The memory plan in the app: "will it fit?" before Start, and a fit badge per model.

Everything here is ``backends.plan`` arithmetic on the model's ``config.json`` (no weights, no ML
library in the GUI process). ``PlanPanel`` sits above the Train page's Start button: the verdict and
predicted peak in everyday words and, when the run would not fit comfortably, up to three
suggestions, each a button that applies its settings to the form (``apply_changes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from backends import model_shape, plan
from backends.config import RunConfig, config_from_dict
from backends.errors import UserInputError

VERDICT_WORDS = {
    "fits": ("Fits", "#2e7d32"),
    "tight": ("Tight: may run out of memory", "#b26a00"),
    "does_not_fit": ("Does not fit", "#c62828"),
}
BADGES = {"fits": "✓ fits", "tight": "~ tight", "does_not_fit": "✗ too big"}
WITH_CHANGES = "~ fits with changes"
# The plan's parts (field terms) in everyday words.
PART_WORDS = {
    "weights": "model weights",
    "lora": "adapter",
    "gradients": "adapter gradients",
    "optimizer": "optimizer state",
    "activations": "activations (values kept for learning)",
    "logits": "logits (scores over the vocabulary)",
    "overhead": "libraries and framework",
}


def gb(n: int | None) -> str:
    """Bytes in everyday words: ``3.2 GB`` (or ``850 MB`` below 1 GB)."""
    n = n or 0
    return f"{n / plan.GB:.1f} GB" if n >= plan.GB else f"{n / 1e6:.0f} MB"


def plan_for(config: RunConfig) -> plan.MemoryPlan | None:
    """The plan of ``config`` on this machine; None when the model is not imported yet (no
    config.json to read) or its config.json lacks a shape the plan needs."""
    model_dir = model_shape.find_model_dir(config.model)
    if model_dir is None:
        return None
    try:
        return plan.plan_memory(config, model_shape.read_model_config(model_dir))
    except ValueError:
        return None


def summary(result: plan.MemoryPlan) -> str:
    """One sentence: the verdict, the peak against free memory, and what it is made of."""
    parts = result.breakdown
    words, _ = VERDICT_WORDS[result.verdict]
    need = result.peak + result.reserve
    biggest = max(plan.TRAIN_PARTS, key=lambda k: parts[k])
    return (
        f"{words}: this run needs about {gb(need)} of the {gb(result.available)} free "
        f"({result.target.replace('-', ' ')}; model weights {gb(parts['weights'])}, the largest part is "
        f"{PART_WORDS[biggest]} at {gb(parts[biggest])})."
    )


def fit_badge(model_dir: str | Path | None) -> tuple[str, str]:
    """(badge text, tooltip) for a model with the default run settings on this machine, e.g.
    ("✓ fits", "about 1.2 GB of 18 GB free ..."); ("-", reason) when the plan cannot tell."""
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        return "-", "import the model to see whether it fits"
    try:
        config = config_from_dict({"model": str(model_dir)})
        result = plan.plan_memory(config, model_shape.read_model_config(model_dir))
    except (ValueError, UserInputError) as exc:
        return "-", f"no memory plan: {exc}"
    tip = summary(result)
    badge = BADGES[result.verdict]
    if result.suggestions:
        tip += " It fits with: " + result.suggestions[0]["label"] + "."
        badge = WITH_CHANGES if result.verdict == "does_not_fit" else badge
    return badge, tip + " (default settings; `tunedesk plan` for details)"


class PlanPanel(QWidget):
    """The plan of the Train page's current settings; ``apply_changes(dict)`` carries a chosen
    suggestion's config changes (dotted keys) to the form."""

    apply_changes = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        layout.addWidget(self.label)
        self.buttons: list[QPushButton] = []
        for i in range(3):
            button = QPushButton("")
            button.setVisible(False)
            button.clicked.connect(lambda _=False, i=i: self._apply(i))
            layout.addWidget(button)
            self.buttons.append(button)
        self.result: plan.MemoryPlan | None = None

    def _apply(self, index: int) -> None:
        if self.result is not None and index < len(self.result.suggestions):
            self.apply_changes.emit(dict(self.result.suggestions[index]["changes"]))

    def update_plan(self, raw: dict[str, Any] | None) -> None:
        """Show the plan of a run config dict (as the Train page builds it); None or an invalid
        config clears the panel."""
        try:
            config = config_from_dict(raw) if raw is not None else None
        except UserInputError:
            config = None
        self.result = plan_for(config) if config is not None else None
        for button in self.buttons:
            button.setVisible(False)
        if self.result is None:
            self.label.setText("Memory plan: shown once the model is imported.")
            self.label.setStyleSheet("")
            return
        _, color = VERDICT_WORDS[self.result.verdict]
        self.label.setText(summary(self.result))
        self.label.setStyleSheet(f"color: {color}")
        self.label.setToolTip(
            "\n".join(
                f"{PART_WORDS[k]}: {gb(v)}" for k, v in self.result.breakdown.items() if k in plan.TRAIN_PARTS
            )
        )
        for button, suggestion in zip(self.buttons, self.result.suggestions, strict=False):
            button.setText(f"Use {suggestion['label']} (about {gb(suggestion['peak'])})")
            button.setVisible(True)
