"""Where TuneDesk keeps its data: ``$TUNEDESK_HOME`` or platformdirs' user data dir.

Layout (``../shared/design.md``): ``models/`` holds imported models (one HF folder each), ``runs/``
holds run folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def home() -> Path:
    """The app's data folder: ``$TUNEDESK_HOME`` if set, else the platform's user data dir."""
    env = os.environ.get("TUNEDESK_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("TuneDesk", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Folder of imported models (``<home>/models``), created on demand."""
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Folder of run folders (``<home>/runs``), created on demand."""
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    """The project's ``resources/`` folder (sample data, presets), also inside a frozen bundle."""
    import sys

    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return RESOURCES
