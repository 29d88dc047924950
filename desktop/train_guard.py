"""What the Train page checks and says around a run, kept out of the page itself: the presets in
words, whether the Data step found the file usable (Start is refused otherwise), and what a
finished quick test did and did not do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from backends.config import config_from_dict
from backends.runs import RunDir, run_status
from backends.training.loop import RECENT_LOSSES
from desktop.settings_form import flatten

# Chosen on the other pages or in the basic settings above the advanced form.
BASIC_KEYS = ("preset", "model", "method", "data.train_file")
PRESET_HELP = {
    "quick-test": "20 steps to check that everything works (minutes). The model learns almost nothing yet.",
    "balanced": "One pass over the data, an adapter on every layer: the usual choice.",
    "quality": "Three passes, a larger adapter and a slower learning rate: slower, often better.",
}
# The two losses the app shows, named apart (the Runs page shows the second one).
STEP_LOSS = "this step's loss"
AVERAGE_LOSS = f"average loss of the last {RECENT_LOSSES} steps"


def resolved_preset_values(preset: str) -> dict[str, Any]:
    """Every config value (flat dotted keys) that the preset gives on top of the defaults."""
    return flatten(config_from_dict({"preset": preset}).model_dump(mode="json"))


def resumable(run_dir: str | Path) -> bool:
    """True when a run is stopped or failed (not running, not finished) and has a checkpoint."""
    run = RunDir(Path(run_dir))
    return run_status(run) in ("stopped", "failed") and run.latest_checkpoint() is not None


def data_problem(report: dict[str, Any] | None, error: str | None) -> str | None:
    """Why the checked data file cannot be trained on (None when it can, or was not checked):
    the check failed (``error``: its message, naming file, line and field) or kept no row."""
    if report is None:
        return error or None
    if not int(report.get("rows_kept") or 0):
        read = int(report.get("rows_read") or 0)
        return f"none of its {read} rows can be used (the Data page lists why)"
    return None


def run_preset(run_dir: str | Path | None) -> str | None:
    """The preset a run was started with (its ``config.yaml``), or None."""
    if not run_dir:
        return None
    try:
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return raw.get("preset") if isinstance(raw, dict) else None


def quick_test_note(steps: int) -> str:
    """What a finished quick-test run means, in plain words."""
    return (
        f"This was a quick test: {steps} steps check that everything works, but they are too few for "
        "the model to learn your data, so its answers will hardly change. To really train, choose the "
        "preset “balanced” and press Start again."
    )
