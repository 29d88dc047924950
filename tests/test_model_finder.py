"""The Model page's "Find and download" tab (pytest-qt, offscreen): a model in the Hugging Face cache
is listed with its size and the memory plan's fit badge and imported with one click; a download
runs `models import hf:ORG/NAME --download` as a child process against a stand-in Hub on 127.0.0.1
(HF_ENDPOINT) and ends with the model selected; offline, the child's error is shown in words."""

from __future__ import annotations

import pytest

from desktop.model_finder import repo_id
from desktop.pages.model_page import ModelPage
from desktop.state import AppState
from tests.test_model_sources import _hf_cache

TIMEOUT_MS = 180_000


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("HF_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_repo_id_accepts_what_people_paste():
    assert repo_id(" HuggingFaceTB/SmolLM2-360M-Instruct ") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert (
        repo_id("https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/tree/main") == "Qwen/Qwen2.5-0.5B-Instruct"
    )
    assert repo_id("hf:acme/tiny") == "acme/tiny"
    assert repo_id("just-a-name") is None and repo_id("a/b/c") is None and repo_id("") is None


def test_found_model_is_listed_with_size_and_fit_and_imports(qtbot, fake_home, tiny_model_dir):
    _hf_cache(fake_home, tiny_model_dir)
    page = ModelPage(AppState())
    qtbot.addWidget(page)
    finder = page.finder
    assert finder.refs() == ["hf:acme/tiny-llama"]
    cells = [finder.table.item(0, j).text() for j in range(5)]
    size = sum(f.stat().st_size for f in tiny_model_dir.iterdir())
    assert cells[:3] == ["hf:acme/tiny-llama", "Hugging Face cache", "model folder"]
    assert cells[3] == f"{size / 2**20:.0f} MB"
    assert cells[4] == "✓ fits" and "free" in finder.table.item(0, 4).toolTip()
    assert "1 model(s) found" in finder.note.text()
    finder.table.selectRow(0)
    finder.import_button.click()
    assert page.tabs.currentIndex() == 0 and page.is_importing()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=TIMEOUT_MS)
    assert page.status.text() == "Imported tiny-llama.", page.status.text()
    assert "tiny-llama" in page.model_names() and page.state.model == "tiny-llama"


def test_download_from_a_stand_in_hub_then_offline(qtbot, fake_home, tiny_model_dir, monkeypatch):
    from tests.fake_hub import serve_repo

    page = ModelPage(AppState())
    qtbot.addWidget(page)
    finder = page.finder
    assert finder.refs() == [] and "No model found" in finder.note.text()
    assert finder.download("not a name") is False and "ORG/NAME" in finder.status.text()

    server, seen = serve_repo("acme/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        # Size and fit first: the Hub's file list and config.json, no weights.
        finder.repo.setText("acme/tiny-llama")
        finder.lookup_button.click()
        qtbot.waitUntil(lambda: not finder.is_looking_up(), timeout=TIMEOUT_MS)
        size = sum(f.stat().st_size for f in tiny_model_dir.iterdir())
        assert finder.info.text().startswith(f"acme/tiny-llama: {size / 2**20:.0f} MB to download. ✓ fits: ")
        assert not any("model.safetensors" in line for line in seen)
        finder.lookup("acme/nope")
        qtbot.waitUntil(lambda: not finder.is_looking_up(), timeout=TIMEOUT_MS)
        assert "the Hugging Face Hub has no model acme/nope" in finder.info.text()
        finder.repo.setText("https://huggingface.co/acme/tiny-llama")
        finder.download_button.click()
        assert finder.is_downloading() and not finder.download_button.isEnabled()
        qtbot.waitUntil(lambda: not finder.is_downloading(), timeout=TIMEOUT_MS)
    finally:
        server.shutdown()
    assert finder.status.text() == "Downloaded and imported tiny-llama.", finder.status.text()
    assert any("model.safetensors" in line for line in seen)
    assert page.state.model == "tiny-llama" and "tiny-llama" in page.model_names()
    assert finder.refs() == ["hf:acme/tiny-llama"]  # now in this computer's HF cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert finder.download("acme/other-model") is True
    qtbot.waitUntil(lambda: not finder.is_downloading(), timeout=TIMEOUT_MS)
    text = finder.status.text()
    assert text.startswith("Download failed: ") and "cannot download acme/other-model" in text
    assert "HF_HUB_OFFLINE" in text and finder.download_button.isEnabled()
    finder.lookup("acme/other-model")
    qtbot.waitUntil(lambda: not finder.is_looking_up(), timeout=TIMEOUT_MS)
    assert finder.info.text() == (
        "Could not look it up: cannot look up acme/other-model: HF_HUB_OFFLINE is set "
        "(unset HF_HUB_OFFLINE to allow downloads)"
    )
