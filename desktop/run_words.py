"""The run monitor's figures in words: durations, numbers and the forgetting check's verdict
(shared by the Train page's monitor and the Runs page)."""

from __future__ import annotations

from typing import Any

# The memory chart's series: key (as tests and events name them) -> legend words.
MEMORY_SERIES = {
    "worker RSS": "training process: memory in use (RSS)",
    "device memory (worker)": "training process: GPU memory",
    "system RAM used": "whole computer: memory in use",
    "system VRAM used": "whole computer: GPU memory in use",
}


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``1:02:05``; None -> ``-``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def drift_text(e: dict[str, Any]) -> str:
    """A forgetting event in words: the verdict, the score and, when large, what to try."""
    text = (
        f"{e.get('verdict')} change (drift score {num(e.get('score'), '.3f')}; "
        f"{e.get('answers_changed')} of {e.get('probes')} probe answers changed)"
    )
    if e.get("advice"):
        text += ". To keep more of it, try: " + "; ".join(e["advice"])
    return text


def num(value: Any, fmt: str = ".4f") -> str:
    """``value`` formatted with ``fmt``; ``-`` when missing."""
    return "-" if value is None else format(value, fmt)
