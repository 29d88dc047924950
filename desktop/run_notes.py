"""What the user adds to a run on the Runs page, and how the page orders and compares runs.

A run's display name and notes live in its folder's ``meta.json`` (``{"name": str, "notes":
str}``), written atomically (temporary file, then rename); the folder itself is never renamed, so
a running job, its checkpoints and the paths other runs recorded stay valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from backends.runs import atomic_write_text
from desktop.settings_form import flatten

META_FILE = "meta.json"
# Sort choices of the Runs page: (label, key function, newest/lowest first). Missing values last.
SORTS: dict[str, tuple[str, bool]] = {
    "Newest first": ("started", True),
    "Oldest first": ("started", False),
    "Name": ("display_name", False),
    "Lowest validation loss": ("val_loss", False),
    "Lowest training loss": ("train_loss", False),
    "Longest": ("duration", True),
}
STATUSES = ("all", "finished", "running", "stopped", "failed")


def read_meta(run_dir: str | Path) -> dict[str, str]:
    """The run's ``meta.json`` as ``{"name": ..., "notes": ...}`` (empty strings when unset or
    unreadable: a broken file never hides the run)."""
    try:
        raw = json.loads((Path(run_dir) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    return {"name": str(raw.get("name") or ""), "notes": str(raw.get("notes") or "")}


def write_meta(run_dir: str | Path, *, name: str | None = None, notes: str | None = None) -> dict[str, str]:
    """Set the run's display name and/or notes (None: keep; "" clears) atomically; returns the
    new meta. Raises FileNotFoundError when the run folder is gone."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    meta = read_meta(folder)
    if name is not None:
        meta["name"] = " ".join(name.split())  # one line, no stray spaces
    if notes is not None:
        meta["notes"] = notes.strip()
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def with_meta(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``summarize_run`` rows with ``display_name`` (the user's name, else the folder's)
    and ``notes`` added."""
    out = []
    for r in rows:
        meta = read_meta(r["path"])
        out.append({**r, "display_name": meta["name"] or r["name"], "notes": meta["notes"]})
    return out


def matches(row: dict[str, Any], text: str, status: str = "all") -> bool:
    """True when ``row`` has the status (``all``: any) and every word of ``text`` appears in its
    name, folder, model, data file, method or notes (case-insensitive)."""
    if status != "all" and row.get("status") != status:
        return False
    fields = ("display_name", "name", "model", "data", "method", "notes")
    hay = " ".join(str(row.get(f) or "") for f in fields).lower()
    return all(word in hay for word in text.lower().split())


def arrange(
    rows: list[dict[str, Any]], text: str = "", status: str = "all", sort: str = "Newest first"
) -> list[dict[str, Any]]:
    """``rows`` filtered by ``matches`` and sorted by the ``SORTS`` choice (missing values last)."""
    key, descending = SORTS[sort]
    kept = [r for r in rows if matches(r, text, status)]
    present = [r for r in kept if r.get(key) is not None]
    missing = [r for r in kept if r.get(key) is None]
    if key == "display_name":
        present.sort(key=lambda r: str(r[key]).lower())
    else:
        present.sort(key=lambda r: r[key], reverse=descending)
    return present + missing


def config_values(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as dotted keys (``training.learning_rate``: 0.0002); {} if none."""
    try:
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(raw) if isinstance(raw, dict) else {}


def compare_configs(a: str | Path, b: str | Path) -> list[tuple[str, Any, Any, bool]]:
    """Two runs' settings side by side: ``(key, value in a, value in b, differs)`` per config key,
    the differing keys first, each group in key order. A key only one run has shows None in the
    other."""
    va, vb = config_values(a), config_values(b)
    rows = [(k, va.get(k), vb.get(k), va.get(k) != vb.get(k)) for k in sorted(set(va) | set(vb))]
    return [r for r in rows if r[3]] + [r for r in rows if not r[3]]
