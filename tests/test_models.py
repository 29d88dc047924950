"""Model store: GGUF import of the real SmolLM2 file, HF folder import, pickle refusal."""

from __future__ import annotations

import json

import pytest

from backends import models
from backends.errors import UserInputError


def test_pickle_checkpoint_refused(tmp_path):
    src = tmp_path / "pickled"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserInputError) as info:
        models.import_model(src)
    assert "pickle" in str(info.value) and "--allow-pickle" in str(info.value)
    assert not (models.paths.models_dir() / "pickled").exists()  # nothing half-written


def test_not_a_model(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        models.import_model(tmp_path / "missing")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(UserInputError, match="gguf"):
        models.import_model(tmp_path / "weights.txt")
    with pytest.raises(UserInputError, match="unknown model"):
        models.resolve_model("no-such-model")


def test_rope_theta_written_for_mlx(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}))
    assert models.fix_config_for_mlx(cfg) is True
    assert json.loads(cfg.read_text())["rope_theta"] == 100000.0
    assert models.fix_config_for_mlx(cfg) is False


def test_default_gguf_found_through_package_metadata():
    path = models.default_gguf_path()
    assert path.name == models.DEFAULT_GGUF_NAME and path.stat().st_size > 50_000_000


def test_hf_folder_import_copies_safetensors(tiny_model_dir):
    out = models.import_model(tiny_model_dir, "tiny")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    listed = {m["name"]: m for m in models.list_models()}
    assert listed["tiny"]["params"] == models.safetensors_param_count(tiny_model_dir) > 0
    with pytest.raises(UserInputError, match="already imported"):
        models.import_model(tiny_model_dir, "tiny")


@pytest.mark.slow
def test_gguf_import_answers_paris_and_matches_mlx(smollm2_dir):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert cfg["rope_theta"] == 100000.0 and "quantization_config" not in cfg
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert "<|im_start|>" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, use_safetensors=True)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply
    with torch.no_grad():
        torch_logits = model(**enc).logits[0].numpy()

    mx = pytest.importorskip("mlx.core")
    import mlx_lm

    mlx_model, _ = mlx_lm.load(str(smollm2_dir))
    mlx_model.set_dtype(mx.float32)  # the store holds bf16; compare both in fp32 like the torch side
    mlx_logits = np.array(mlx_model(mx.array(enc["input_ids"].numpy()))[0].astype(mx.float32))
    assert np.abs(torch_logits - mlx_logits).max() < 1e-3


def test_two_first_uses_at_once_import_the_default_model_once(monkeypatch):
    """The app and a CLI run asking for the default model at the same moment: one imports it
    while the other waits on the store's lock file, then both get the same folder."""
    import threading
    import time

    from backends import paths

    calls: list[str] = []

    def slow_import(src, name, progress=None):
        calls.append(name)
        time.sleep(0.5)  # long enough for the other caller to arrive while this one imports
        folder = paths.models_dir() / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        return folder

    monkeypatch.setattr(models, "import_model", slow_import)
    monkeypatch.setattr(models, "default_gguf_path", lambda: "unused.gguf")
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(models.resolve_model(models.DEFAULT_MODEL)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert calls == [models.DEFAULT_MODEL]
    assert len(results) == 2 and results[0] == results[1] == paths.models_dir() / models.DEFAULT_MODEL
