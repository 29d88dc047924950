"""Progress of reading and tokenising a data file, for people (stderr lines) and programs (events).

``DataProgress(say, event)``: ``say(text)`` gets human-readable lines ("reading data.jsonl: 45%
(450 MB of 1.0 GB), 1,234,567 rows"), ``event(fields)`` gets ``data_progress`` fields
``{stage, done, total, unit, rows}`` (``unit``: 'bytes' or 'rows'; ``stage``: 'reading').
Updates come at most every ``interval`` seconds, and once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class DataProgress:
    """Throttled progress reports (see the module docstring); either callback may be None."""

    def __init__(
        self,
        say: Callable[[str], None] | None = None,
        event: Callable[[dict[str, Any]], None] | None = None,
        interval: float = 0.5,
    ) -> None:
        self.say = say
        self.event = event
        self.interval = interval
        self._last = time.monotonic()

    def message(self, text: str) -> None:
        """A free-form line (``say`` only)."""
        if self.say is not None:
            self.say(text)

    def reading(self, name: str, done: int, total: int, unit: str, rows: int, final: bool = False) -> None:
        """How far reading (and tokenising) ``name`` is: ``done`` of ``total`` ``unit``."""
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        if self.event is not None:
            self.event({"stage": "reading", "done": done, "total": total, "unit": unit, "rows": rows})
        if self.say is not None:
            share = f"{100 * done / total:.0f}%" if total else "100%"
            amount = f"{_size(done)} of {_size(total)}" if unit == "bytes" else f"{done:,} of {total:,} rows"
            self.say(f"reading {name}: {share} ({amount}), {rows:,} rows")


def as_progress(progress: DataProgress | Callable[[str], None] | None) -> DataProgress:
    """A ``DataProgress`` from one, from a plain ``say`` callable, or from None (silent)."""
    return progress if isinstance(progress, DataProgress) else DataProgress(say=progress)
