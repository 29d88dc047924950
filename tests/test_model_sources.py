"""Models found in the HF cache, LM Studio's and Ollama's folders (fake trees in tmp that hold real
files: the tiny Llama's safetensors, the SmolLM2 GGUF, an Ollama manifest of the real shape)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from backends import cli, model_sources, models
from backends.errors import UserInputError


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("HF_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    return home


def _hf_cache(home, tiny_model_dir, repo="acme/tiny-llama", rev="0123abcd"):
    """The hub cache layout: blobs/<etag>, snapshots/<rev>/<file> -> ../../blobs/<etag>, refs/main."""
    repo_dir = home / ".cache" / "huggingface" / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / rev
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        blob = repo_dir / "blobs" / hashlib.sha256(f.name.encode()).hexdigest()
        os.link(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    return snapshot


def _ollama(home, gguf, name="smollm2", tag="135m"):
    """~/.ollama/models: blobs/sha256-<hex> (the GGUF) and the image manifest naming it."""
    root = home / ".ollama" / "models"
    (root / "blobs").mkdir(parents=True)
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    blob = root / "blobs" / f"sha256-{digest}"
    os.link(gguf, blob)
    template = root / "blobs" / ("sha256-" + "1" * 64)
    template.write_text("{{ .Prompt }}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "2" * 64,
            "size": 485,
        },
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": f"sha256:{digest}",
                "size": gguf.stat().st_size,
            },
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": "sha256:" + "1" * 64,
                "size": 13,
            },
        ],
    }
    path = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return blob


def _lmstudio(home, gguf):
    repo = home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-GGUF"
    repo.mkdir(parents=True)
    os.link(gguf, repo / "SmolLM2-135M-Instruct-Q4_1.gguf")
    (repo / "mmproj-model-f16.gguf").write_bytes(b"GGUF")  # a vision projector: not listed
    return repo


def test_find_lists_each_tool_folder(fake_home, tiny_model_dir, capsys):
    gguf = models.default_gguf_path()
    snapshot = _hf_cache(fake_home, tiny_model_dir)
    blob = _ollama(fake_home, gguf)
    lm = _lmstudio(fake_home, gguf)
    found = {f["ref"]: f for f in model_sources.find_models()}
    assert set(found) == {
        "hf:acme/tiny-llama",
        "ollama:smollm2:135m",
        "lmstudio:lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf",
    }
    assert found["hf:acme/tiny-llama"]["path"] == str(snapshot)
    assert found["ollama:smollm2:135m"]["path"] == str(blob)
    assert found["ollama:smollm2:135m"]["size"] == gguf.stat().st_size
    assert model_sources.resolve_reference("ollama:smollm2:135m") == (blob, "smollm2-135m")
    assert model_sources.resolve_reference("lmstudio:lmstudio-community/SmolLM2-135M-Instruct-GGUF")[0] == (
        lm / "SmolLM2-135M-Instruct-Q4_1.gguf"
    )
    assert cli.main(["models", "find"]) == 0
    assert "ollama:smollm2:135m" in capsys.readouterr().out


def test_hf_cache_model_imports_by_reference(fake_home, tiny_model_dir, monkeypatch):
    snapshot = _hf_cache(fake_home, tiny_model_dir)
    assert cli.main(["models", "import", "hf:acme/tiny-llama"]) == 0
    out = models.paths.models_dir() / "tiny-llama"
    # linked to the cache's blob (the snapshot entry is itself a symlink), not copied
    assert os.path.samefile(out / "model.safetensors", snapshot / "model.safetensors")
    assert not (out / "model.safetensors").is_symlink()
    # HF_HUB_CACHE moves the cache
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_home / "elsewhere"))
    with pytest.raises(UserInputError, match="not in the Hugging Face cache") as info:
        model_sources.resolve_reference("hf:acme/tiny-llama")
    assert "--download" in str(info.value)


def test_download_refused_offline_and_bad_references(fake_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserInputError, match="HF_HUB_OFFLINE"):
        model_sources.resolve_reference("hf:acme/absent", download=True)
    with pytest.raises(UserInputError, match="no model nothere:latest"):
        model_sources.resolve_reference("ollama:nothere")
    with pytest.raises(UserInputError, match="repository id"):
        model_sources.resolve_reference("hf:no-slash")
    assert cli.main(["models", "import", "ollama:nothere"]) == 1
    assert not model_sources.is_reference("C:/models/x.gguf")


@pytest.mark.slow
def test_ollama_blob_imports_as_gguf(fake_home, tmp_path):
    """An Ollama blob has no .gguf suffix: it is recognised by its magic bytes and converted."""
    from tests.tiny_gguf import make_tiny_gguf

    gguf = make_tiny_gguf(tmp_path / "tiny.gguf", models.default_gguf_path())
    _ollama(fake_home, gguf, name="tiny", tag="latest")
    assert cli.main(["models", "import", "ollama:tiny"]) == 0
    row = {m["name"]: m for m in models.list_models()}["tiny"]
    assert row["precision"] == "bf16" and row["architecture"] == "LlamaForCausalLM"


def _download(fake_home, port, tunedesk_home):
    import subprocess
    import sys

    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HOME=str(fake_home))
    env["TUNEDESK_HOME"] = str(tunedesk_home)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "desktop", "models", "import", "hf:acme/tiny-llama", "--download"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_download_from_a_hub_on_localhost_resumes_after_a_dropped_connection(
    fake_home, tiny_model_dir, tunedesk_home
):
    """huggingface_hub's snapshot_download against a stand-in Hub on 127.0.0.1 (HF_ENDPOINT): the
    files land in the HF cache and are imported by reference; a connection dropped half way through
    the weights (12.9 MB) is continued with a Range request, not fetched again from the start.
    (huggingface_hub >= 1 resumes within one download; a new process starts a file afresh.)"""
    from tests.fake_hub import COMMIT, serve_repo

    server, seen = serve_repo("acme/tiny-llama", tiny_model_dir, cut="model.safetensors")
    try:
        done = _download(fake_home, server.server_address[1], tunedesk_home)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.shutdown()
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    url = f"/acme/tiny-llama/resolve/{COMMIT}/model.safetensors"
    gets = [line for line in seen if line.startswith(f"GET {url}")]
    # huggingface_hub writes 10 MB chunks; the retry asks for the rest after what it kept
    assert len(gets) == 2 and gets[0] == f"GET {url}", gets
    kept = int(gets[1].removeprefix(f"GET {url} bytes=").rstrip("-"))
    assert 0 < kept < len(weights) - 1_000_000
    out = models.paths.models_dir() / "tiny-llama"
    assert (out / "model.safetensors").read_bytes() == weights
    assert (out / "model.safetensors").stat().st_nlink == 2  # linked to the cache's blob
    assert any("Trying to resume" in line for line in done.stderr.splitlines())
