"""The user's current choices (model, data file, preset, advanced overrides), shared by the pages,
with defaults a first-time user can start from at once, remembered between sessions.

Settings live in ``<TUNEDESK_HOME>/settings.ini`` (QSettings, INI format) beside the models and
runs, so a different ``TUNEDESK_HOME`` (tests, a second profile) has its own settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from backends import paths
from backends.config import DEFAULT_MODEL

DEFAULT_PRESET = "balanced"
SAMPLE_DATA = Path("demo") / "support_train.jsonl"


def app_settings() -> QSettings:
    """The app's QSettings store (INI file in the app data folder)."""
    return QSettings(str(paths.home() / "settings.ini"), QSettings.Format.IniFormat)


def sample_data_path() -> Path:
    """The sample dataset shipped in ``resources/`` (written by the training engine's demo)."""
    return paths.resources_dir() / SAMPLE_DATA


class AppState(QObject):
    """Current choices; each setter emits its signal and saves the choice."""

    model_changed = Signal(str)
    data_file_changed = Signal(str)
    data_columns_changed = Signal(object)  # the mapping dict

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = app_settings()
        self._model = str(self.settings.value("choices/model", DEFAULT_MODEL))
        default_data = str(sample_data_path())
        self._data_file = str(self.settings.value("choices/data_file", default_data))
        if self._data_file != default_data and not Path(self._data_file).is_file():
            self._data_file = default_data  # the remembered file is gone
        self._data_columns = self._saved_columns()
        self.preset = str(self.settings.value("choices/preset", DEFAULT_PRESET))
        self.method = str(self.settings.value("choices/method", "sft"))

    @property
    def model(self) -> str:
        """Model name in the store, or a path to an HF folder."""
        return self._model

    def set_model(self, model: str) -> None:
        """Choose the model."""
        if model != self._model:
            self._model = model
            self.settings.setValue("choices/model", model)
            self.model_changed.emit(model)

    @property
    def data_file(self) -> str:
        """Path of the training data file."""
        return self._data_file

    def set_data_file(self, path: str) -> None:
        """Choose the training data file."""
        if path != self._data_file:
            self._data_file = path
            self.settings.setValue("choices/data_file", path)
            self._data_columns = {}  # another file: its columns are detected afresh
            self.settings.setValue("choices/data_columns", "{}")
            self.data_file_changed.emit(path)

    @property
    def data_columns(self) -> dict[str, str]:
        """The column mapping chosen on the Data page, role -> the file's column ({}: detected).
        Goes into the run config as ``data.columns``."""
        return dict(self._data_columns)

    def set_data_columns(self, mapping: dict[str, str]) -> None:
        """Choose the column mapping of the current data file."""
        mapping = {str(k): str(v) for k, v in mapping.items() if v}
        if mapping != self._data_columns:
            self._data_columns = mapping
            self.settings.setValue("choices/data_columns", json.dumps(mapping))
            self.data_columns_changed.emit(dict(mapping))

    def _saved_columns(self) -> dict[str, str]:
        try:
            value = json.loads(str(self.settings.value("choices/data_columns", "{}")))
        except (TypeError, ValueError):
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def save_train_choices(self, preset: str, method: str, overrides: dict[str, Any]) -> None:
        """Remember the Train page's preset, method and advanced overrides."""
        self.preset, self.method = preset, method
        self.settings.setValue("choices/preset", preset)
        self.settings.setValue("choices/method", method)
        self.settings.setValue("choices/overrides", json.dumps(overrides))

    def saved_overrides(self) -> dict[str, Any]:
        """The advanced overrides remembered from last time ({} if none or unreadable)."""
        try:
            value = json.loads(str(self.settings.value("choices/overrides", "{}")))
        except (TypeError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def extra_runs_dirs(self) -> list[str]:
        """Run-folder parents other than the default that runs started here went to."""
        value = self.settings.value("runs/extra_dirs", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in value or []]

    def add_runs_dir(self, folder: str) -> None:
        """Remember a run-folder parent (from ``output.runs_dir``) for the Runs page."""
        if Path(folder) == paths.runs_dir():
            return
        dirs = self.extra_runs_dirs()
        if folder not in dirs:
            self.settings.setValue("runs/extra_dirs", [*dirs, folder])
