"""A model folder's own Python code never runs: not when chatting with it, not when an adapter
names it as its base model, not when training on it, even if the user answers "y" on stdin
(transformers asks "run the custom code? [y/N]" unless told ``trust_remote_code=False``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each file writes a marker into the model folder when imported: the proof that it ran
# (transformers imports remote code from a copy in its modules cache, so the path is absolute).
EVIL_CODE = (
    "from pathlib import Path\n"
    "Path({marker!r}).write_text('ran')\n"
    "from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n"
    "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
)


def _evil_folder(tmp_path: Path, tiny_model_dir: Path, model_type: str) -> Path:
    """The tiny model with config and tokenizer pointing at custom code (auto_map)."""
    folder = tmp_path / f"model with code {model_type} ü"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (folder / f"{name}.py").write_text(EVIL_CODE.format(marker=str(folder / f"CODE-RAN-{name}")))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["architectures"] = ["EvilModel"]
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder


def _tunedesk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "desktop", *args],
        input="y\ny\ny\n",  # a user who says yes to every prompt
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def _ran(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("CODE-RAN-*"))


def test_chat_with_a_custom_code_model_refuses_and_runs_nothing(tmp_path, tiny_model_dir):
    folder = _evil_folder(tmp_path, tiny_model_dir, "evilmodel")  # no built-in class to fall back on
    proc = _tunedesk("chat", "--model", str(folder), "--prompt", "hi", "--max-new-tokens", "2", cwd=tmp_path)
    assert _ran(folder) == [], proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "trust_remote_code" in proc.stderr and str(folder) in proc.stderr


def test_an_adapter_naming_a_custom_code_base_cannot_run_it(tmp_path, tiny_model_dir):
    folder = _evil_folder(tmp_path, tiny_model_dir, "evilmodel")
    from tests.chat_adapters import make_peft_run

    adapter = make_peft_run(tmp_path / "shared-run", tiny_model_dir, steps=1) / "adapter"
    meta = json.loads((adapter / "tunedesk.json").read_text())
    meta["base_model"] = {"name": folder.name, "path": str(folder)}
    (adapter / "tunedesk.json").write_text(json.dumps(meta))
    proc = _tunedesk(
        "chat", "--adapter", str(adapter), "--prompt", "hi", "--max-new-tokens", "2", cwd=tmp_path
    )
    assert _ran(folder) == [], proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_known_architecture_with_custom_code_loads_the_builtin_class_only(tmp_path, tiny_model_dir):
    """model_type llama plus an auto_map: transformers' own Llama answers, the folder's code never runs."""
    folder = _evil_folder(tmp_path, tiny_model_dir, "llama")
    proc = _tunedesk("chat", "--model", str(folder), "--prompt", "hi", "--max-new-tokens", "2", cwd=tmp_path)
    assert _ran(folder) == [], proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_training_engine_loads_without_remote_code(tmp_path, tiny_model_dir):
    folder = _evil_folder(tmp_path, tiny_model_dir, "evilmodel")
    from backends.errors import UserInputError
    from backends.torch_backend.loading import load_causal_lm

    with pytest.raises(UserInputError, match="trust_remote_code"):
        load_causal_lm(folder)
    assert _ran(folder) == []
